package noderunner

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// readVolume returns what a container would read in dir: every file
// through the user-visible names (links through ..data), with its mode.
func readVolume(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	data := filepath.Join(dir, dataDirLink)
	err := filepath.WalkDir(data+"/", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(data, p)
		// Read through the user-visible name, as a container does.
		visible := filepath.Join(dir, rel)
		b, err := os.ReadFile(visible)
		if err != nil {
			return err
		}
		st, err := os.Stat(visible)
		if err != nil {
			return err
		}
		out[rel] = st.Mode().Perm().String() + " " + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	changed, err := writeAtomic(dir, map[string]volumeFile{
		"ca.crt":       {Data: []byte("CA"), Mode: 0o644},
		"token":        {Data: []byte("t1"), Mode: 0o600},
		"sub/dir/file": {Data: []byte("deep"), Mode: 0o644},
	}, t0)
	if err != nil || !changed {
		t.Fatalf("first write: changed=%t err=%v", changed, err)
	}
	want := map[string]string{"ca.crt": "-rw-r--r-- CA", "token": "-rw------- t1", "sub/dir/file": "-rw-r--r-- deep"}
	if diff := cmp.Diff(want, readVolume(t, dir)); diff != "" {
		t.Errorf("volume (-want +got):\n%s", diff)
	}
	first, err := os.Readlink(filepath.Join(dir, dataDirLink))
	if err != nil || !strings.HasPrefix(first, "..2026_05_01_10_00_00.") {
		t.Fatalf("..data -> %q, %v; want the timestamped dir", first, err)
	}
	for _, name := range []string{"ca.crt", "token", "sub"} {
		if l, err := os.Readlink(filepath.Join(dir, name)); err != nil || l != filepath.Join(dataDirLink, name) {
			t.Errorf("%s -> %q, %v; want a link through ..data", name, l, err)
		}
	}

	// The same payload again changes nothing.
	changed, err = writeAtomic(dir, map[string]volumeFile{
		"ca.crt": {Data: []byte("CA"), Mode: 0o644}, "token": {Data: []byte("t1"), Mode: 0o600}, "sub/dir/file": {Data: []byte("deep"), Mode: 0o644},
	}, t0.Add(time.Minute))
	if err != nil || changed {
		t.Fatalf("same payload: changed=%t err=%v", changed, err)
	}

	// An update swaps ..data, drops removed names and the old data dir.
	changed, err = writeAtomic(dir, map[string]volumeFile{
		"ca.crt": {Data: []byte("CA"), Mode: 0o644}, "token": {Data: []byte("t2"), Mode: 0o600},
	}, t0.Add(2*time.Minute))
	if err != nil || !changed {
		t.Fatalf("update: changed=%t err=%v", changed, err)
	}
	want = map[string]string{"ca.crt": "-rw-r--r-- CA", "token": "-rw------- t2"}
	if diff := cmp.Diff(want, readVolume(t, dir)); diff != "" {
		t.Errorf("updated volume (-want +got):\n%s", diff)
	}
	second, _ := os.Readlink(filepath.Join(dir, dataDirLink))
	if second == first || !strings.HasPrefix(second, "..2026_05_01_10_02_00.") {
		t.Errorf("..data -> %q after the update (was %q)", second, first)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{second, dataDirLink, "ca.crt", "token"}, names); diff != "" {
		t.Errorf("dir entries (-want +got):\n%s", diff)
	}

	for _, bad := range []string{"/abs", "../up", "a/../../b", "..hidden", ""} {
		if _, err := writeAtomic(dir, map[string]volumeFile{bad: {Data: []byte("x"), Mode: 0o644}}, t0); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
}

func TestCheckHostPath(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "dir")
	file := filepath.Join(base, "file")
	sock := filepath.Join(base, "sock")
	os.Mkdir(dir, 0o755)
	os.WriteFile(file, nil, 0o644)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	link := filepath.Join(base, "link")
	os.Symlink(dir, link)
	typ := func(t corev1.HostPathType) *corev1.HostPathType { return &t }
	tests := []struct {
		path    string
		typ     *corev1.HostPathType
		want    string // resolved path
		wantErr string
		made    bool // the path exists afterwards
	}{
		{dir, nil, dir, "", true},
		{link, typ(corev1.HostPathDirectory), dir, "", true},
		{filepath.Join(base, "new-dir/sub"), typ(corev1.HostPathDirectoryOrCreate), filepath.Join(base, "new-dir/sub"), "", true},
		{filepath.Join(base, "new-file"), typ(corev1.HostPathFileOrCreate), filepath.Join(base, "new-file"), "", true},
		{filepath.Join(base, "nodir/new-file"), typ(corev1.HostPathFileOrCreate), "", "create file", false},
		{file, typ(corev1.HostPathDirectoryOrCreate), "", "exists and is not a directory", true},
		{dir, typ(corev1.HostPathFileOrCreate), "", "exists and is not a file", true},
		{file, typ(corev1.HostPathDirectory), "", "is not a directory", true},
		{dir, typ(corev1.HostPathFile), "", "is not a file", true},
		{sock, typ(corev1.HostPathSocket), sock, "", true},
		{file, typ(corev1.HostPathSocket), "", "is not a socket file", true},
		{"/dev/null", typ(corev1.HostPathCharDev), "/dev/null", "", true},
		{file, typ(corev1.HostPathCharDev), "", "is not a character device", true},
		{"/dev/null", typ(corev1.HostPathBlockDev), "", "is not a block device", true},
		{filepath.Join(base, "missing"), typ(corev1.HostPathDirectory), "", "does not exist", false},
		{dir, typ("Weird"), "", "not a valid type", true},
		{"relative", nil, "", "not absolute", false},
	}
	for _, tt := range tests {
		got, err := checkHostPath(tt.path, tt.typ)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("checkHostPath(%s, %v) = %q, %v; want an error containing %q", tt.path, tt.typ, got, err, tt.wantErr)
			}
		} else if err != nil || got != tt.want {
			t.Errorf("checkHostPath(%s, %v) = %q, %v; want %q", tt.path, tt.typ, got, err, tt.want)
		}
		if _, err := os.Lstat(tt.path); (err == nil) != tt.made && filepath.IsAbs(tt.path) {
			t.Errorf("checkHostPath(%s, %v): exists afterwards = %t, want %t", tt.path, tt.typ, err == nil, tt.made)
		}
	}
}

// fakeMounter records what the runner would mount in the node's namespace.
type fakeMounter struct{ calls []string }

func (f *fakeMounter) EnsureShared(p string) error {
	f.calls = append(f.calls, "shared "+p)
	return nil
}
func (f *fakeMounter) MountTmpfs(d string, n int64) error {
	f.calls = append(f.calls, "tmpfs "+filepath.Base(d))
	return nil
}
func (f *fakeMounter) UnmountUnder(d string) error {
	f.calls = append(f.calls, "unmount "+filepath.Base(d))
	return nil
}

func TestSetupVolumes(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "glia-config", Namespace: "ns"},
		Data: map[string]string{"debug": "true", "routing-mode": "native"}, BinaryData: map[string][]byte{"blob": {0, 1}}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls", Namespace: "ns"}, Data: map[string][]byte{"tls.key": []byte("KEY")}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid-1", Labels: map[string]string{"app": "a"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "glia",
			Containers:         []corev1.Container{{Name: "c"}},
			Volumes: []corev1.Volume{
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "glia-config"}}}},
				{Name: "cfg-items", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "glia-config"},
					Items: []corev1.KeyToPath{{Key: "debug", Path: "conf/debug", Mode: ptr.To[int32](0o600)}}, DefaultMode: ptr.To[int32](0o440)}}},
				{Name: "opt", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "absent", Optional: ptr.To(true)}}},
				{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls"}}},
				{Name: "mem", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
				{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					DefaultMode: ptr.To[int32](0o644),
					Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
						{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "glia-config"}, Items: []corev1.KeyToPath{{Key: "debug", Path: "ca.crt"}}}},
						{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
					}}}},
				{Name: "labels", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
			},
		},
	}
	client := fake.NewClientset(cm, sec)
	tokens := addTokenReactor(client)
	mounter := &fakeMounter{}
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	r := &runner{client: client, mounter: mounter, now: func() time.Time { return now }, cfg: Config{VolumeResync: 10 * time.Second}}
	r.tokens = newTokenManager(client, r.now)
	st := &PodState{UID: "uid-1", Dir: t.TempDir()}
	w := &podWorker{r: r, uid: "uid-1", st: st, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	vols, err := w.setupVolumes(context.Background(), pod, st)
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) map[string]string { return readVolume(t, vols[name].path) }
	checks := []struct {
		vol  string
		want map[string]string
	}{
		{"cfg", map[string]string{"debug": "-rw-r--r-- true", "routing-mode": "-rw-r--r-- native", "blob": "-rw-r--r-- \x00\x01"}},
		{"cfg-items", map[string]string{"conf/debug": "-rw------- true"}},
		{"opt", map[string]string{}},
		{"tls", map[string]string{"tls.key": "-rw-r--r-- KEY"}},
		{"kube-api-access-x", map[string]string{"token": "-rw-r--r-- " + tokens.last(), "ca.crt": "-rw-r--r-- true", "namespace": "-rw-r--r-- ns"}},
		{"labels", map[string]string{"labels": `-rw-r--r-- app="a"`}},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, read(c.vol)); diff != "" {
			t.Errorf("volume %s (-want +got):\n%s", c.vol, diff)
		}
		if !vols[c.vol].readOnly {
			t.Errorf("volume %s is not read-only", c.vol)
		}
	}
	if vols["mem"].readOnly || !strings.HasSuffix(vols["mem"].path, "kubernetes.io~empty-dir/mem") {
		t.Errorf("emptyDir volume: %+v", vols["mem"])
	}
	if diff := cmp.Diff([]string{"tmpfs mem"}, mounter.calls); diff != "" {
		t.Errorf("node mounts (-want +got):\n%s", diff)
	}
	if tokens.count() != 1 {
		t.Errorf("%d token requests, want 1", tokens.count())
	}

	// A change of the ConfigMap and the labels reaches the volumes on the
	// next sync; the token is not requested again before it is due.
	cm.Data["debug"] = "false"
	if _, err := client.CoreV1().ConfigMaps("ns").Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod.Labels["app"] = "b"
	now = now.Add(time.Minute)
	if vols, err = w.setupVolumes(context.Background(), pod, st); err != nil {
		t.Fatal(err)
	}
	if got := read("cfg")["debug"]; got != "-rw-r--r-- false" {
		t.Errorf("configMap volume after the update: debug = %q", got)
	}
	if got := read("labels")["labels"]; got != `-rw-r--r-- app="b"` {
		t.Errorf("downwardAPI volume after the label change: %q", got)
	}
	if tokens.count() != 1 {
		t.Errorf("token requested again before it was due (%d requests)", tokens.count())
	}

	// What cannot be provided fails with the volume's name and the reason.
	bad := []struct {
		v    corev1.Volume
		want string
	}{
		{corev1.Volume{Name: "gone", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}}}}, `MountVolume.SetUp failed for volume "gone": configmap "nope" not found`},
		{corev1.Volume{Name: "key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls", Items: []corev1.KeyToPath{{Key: "tls.crt", Path: "c"}}}}}, `secret ns/tls has no key "tls.crt"`},
		{corev1.Volume{Name: "pvc", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "x"}}}, "not supported by the lab node runner"},
		{corev1.Volume{Name: "hp", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/nonexistent-glia-test", Type: ptr.To(corev1.HostPathSocket)}}}, "hostPath type check failed"},
		{corev1.Volume{Name: "huge", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumHugePages}}}, "not supported"},
	}
	for _, b := range bad {
		p := pod.DeepCopy()
		p.Spec.Volumes = []corev1.Volume{b.v}
		_, err := w.setupVolumes(context.Background(), p, st)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("volume %s: %v, want an error containing %q", b.v.Name, err, b.want)
		}
	}
}

func TestSubPathSource(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	os.Symlink("/etc", filepath.Join(dir, "escape"))
	vol := &volume{path: dir}
	tests := []struct {
		sub, want, err string
	}{
		{"", dir, ""},
		{"f", filepath.Join(dir, "f"), ""},
		{"new/sub", filepath.Join(dir, "new/sub"), ""},
		{"escape/passwd", filepath.Join(dir, "etc/passwd"), ""}, // the symlink stays inside the volume
		{"../x", "", "relative path inside the volume"},
		{"/abs", "", "relative path inside the volume"},
	}
	for _, tt := range tests {
		got, err := subPathSource(vol, tt.sub)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("subPath %q: %q, %v; want error %q", tt.sub, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("subPath %q = %q, %v; want %q", tt.sub, got, err, tt.want)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "new/sub")); err != nil || !st.IsDir() {
		t.Errorf("missing subPath not created as a directory: %v", err)
	}
	if _, err := subPathSource(&volume{path: dir, readOnly: true}, "absent"); err == nil {
		t.Error("a missing subPath of a read-only volume was accepted")
	}
}

func TestVisibleInContainer(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	tmp := filepath.Join(t.TempDir(), "prog") // under /tmp: hidden by the container's own /tmp
	os.WriteFile(tmp, nil, 0o755)
	tests := []struct {
		path string
		want bool
	}{
		{sh, !strings.HasPrefix(sh, "/tmp/") && !strings.HasPrefix(sh, "/run/")},
		{tmp, !strings.HasPrefix(tmp, "/tmp/")},
		{"/proc/self/exe", false},
		{"/dev/null", false},
		{"/nonexistent/glia", false},
	}
	for _, tt := range tests {
		if got := visibleInContainer(tt.path); got != tt.want {
			t.Errorf("visibleInContainer(%s) = %t, want %t", tt.path, got, tt.want)
		}
	}
}
