package noderunner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/lab/podinit/mountinfo"
)

// inNodeNamespace runs fn on a thread of its own in a new mount namespace
// (the test's stand-in for the node's): whatever fn mounts stays there, and
// the thread ends with fn.
func inNodeNamespace(t *testing.T, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// runSpec starts one container of pod through podinit (in the calling
// thread's mount namespace, the runner's network namespace) and returns its
// output once it exits.
func runSpec(w *podWorker, pod *corev1.Pod, c *corev1.Container, logPath string) (string, error) {
	spec, err := w.launchSpec(context.Background(), pod, c)
	if err != nil {
		return "", err
	}
	// As Spawn starts a container, without its log and session plumbing.
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.Command(w.r.selfExe, append([]string{"lab", "_pod-init"}, spec.opts.Args()...)...)
	cmd.Env, cmd.Stdout, cmd.Stderr = spec.env, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		err = errors.New("container did not exit")
	}
	out, _ := os.ReadFile(logPath)
	if err != nil {
		return string(out), fmt.Errorf("container: %w\n%s", err, out)
	}
	return string(out), nil
}

// TestPrivilegedPodFilesystem starts real containers of a DaemonSet-like
// pod: the projected service account token, a configMap volume, hostPath
// volumes with Bidirectional propagation through a node-side bind, the
// glia image's files and $(VAR) expansion, and writes to / that stay in the
// container.
func TestPrivilegedPodFilesystem(t *testing.T) {
	requireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	// The node: a node-local dir shown at a "host" path by --bind.
	nodeLocal := filepath.Join(base, "nodes/n1/root/var/lib/glia")
	hostPath := filepath.Join(base, "host/var/lib/glia")
	if err := os.MkdirAll(hostPath, 0o755); err != nil {
		t.Fatal(err)
	}
	// The lab's bin dir with a stand-in glia-agent.
	bin := filepath.Join(base, "bin")
	os.MkdirAll(bin, 0o755)
	agent := "#!/bin/sh\necho \"glia-agent $*\"\necho \"ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)\"\n"
	for _, f := range []string{"glia", "glia-agent", "glia-cni"} {
		if err := os.WriteFile(filepath.Join(bin, f), []byte(agent), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stateDir := filepath.Join(base, "state")
	marker := "glia-fs-test-" + randHex(t)

	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "glia-config", Namespace: "glia-system"}, Data: map[string]string{"routing-mode": "native"}}
	root := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "glia-system"}, Data: map[string]string{"ca.crt": "CA-PEM"}}
	client := fake.NewClientset(cm, root, kubernetesSvc())
	tokens := addTokenReactor(client)
	cfg := DefaultConfig()
	cfg.Node, cfg.NodeIP, cfg.StateDir = "n1", "198.18.0.11", stateDir
	cfg.SelfExe, cfg.ImageBinDir = self, bin
	r := &runner{client: client, cfg: cfg, selfExe: self, mounter: hostMounter{}, imageBin: bin, now: time.Now,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	r.tokens = newTokenManager(client, time.Now)

	bidir := corev1.MountPropagationBidirectional
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "glia-x7", Namespace: "glia-system", UID: "uid-fs-1"},
		Spec: corev1.PodSpec{
			NodeName: "n1", HostNetwork: true, ServiceAccountName: "glia",
			Volumes: []corev1.Volume{
				{Name: "state", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostPath, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}},
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "glia-config"}}}},
				{Name: "kube-api-access-abcde", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					DefaultMode: ptr.To[int32](0o644),
					Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
						{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
						{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
					}}}},
			},
		},
	}
	saMount := corev1.VolumeMount{Name: "kube-api-access-abcde", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}
	shell := &corev1.Container{
		Name: "shell", Image: "busybox",
		SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
		Command:         []string{"sh", "-c"},
		Args: []string{strings.Join([]string{
			"set -e",
			"echo token=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token)",
			"echo ca=$(cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)",
			"echo mode=$(cat /etc/glia/routing-mode)",
			"echo root-write > /etc/" + marker,
			"mkdir -p /var/lib/glia/inner",
			"mount -t tmpfs inner /var/lib/glia/inner",
			"echo made-inside > /var/lib/glia/inner/file",
			"echo done",
		}, "\n")},
		VolumeMounts: []corev1.VolumeMount{
			saMount,
			{Name: "config", MountPath: "/etc/glia"},
			{Name: "state", MountPath: "/var/lib/glia", MountPropagation: &bidir},
		},
	}
	gliaC := &corev1.Container{
		Name: "glia-agent", Image: "localhost:5000/glia:0.1.0",
		Command:      []string{"glia-agent"},
		Args:         []string{"--node-name=$(NODE_NAME)"},
		Env:          []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
		VolumeMounts: []corev1.VolumeMount{saMount},
	}
	pod.Spec.Containers = []corev1.Container{*shell, *gliaC}
	hostTableBefore, _ := os.ReadFile("/proc/self/mountinfo") // the main thread: the host's namespace

	inNodeNamespace(t, func() error {
		if err := prepareNodeMounts([]Bind{{Src: nodeLocal, Dst: hostPath}}); err != nil {
			return err
		}
		st := &PodState{UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name, HostNetwork: true,
			Dir: filepath.Join(stateDir, "pod-data", string(pod.UID))}
		if err := os.MkdirAll(st.Dir, 0o755); err != nil {
			return err
		}
		if err := writePodFiles(st, pod, cfg, cfg.NodeIP); err != nil {
			return err
		}
		w := &podWorker{r: r, uid: pod.UID, st: st, log: r.log}
		vols, err := w.setupVolumes(context.Background(), pod, st)
		if err != nil {
			return err
		}
		w.setVolumes(vols)

		out, err := runSpec(w, pod, shell, filepath.Join(base, "shell.log"))
		if err != nil {
			return err
		}
		var errs []error
		check := func(ok bool, format string, args ...any) {
			if !ok {
				errs = append(errs, fmt.Errorf(format, args...))
			}
		}
		check(strings.Contains(out, "done\n"), "shell container did not finish:\n%s", out)
		var tok string
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, "token="); ok {
				tok = v
			}
		}
		check(tok != "" && tok == tokens.last(), "token file %q is not the TokenRequest's token", tok)
		if tok != "" {
			claims := jwtClaims(t, tok)
			podClaim, _ := claims["kubernetes.io"].(map[string]any)["pod"].(map[string]any)
			check(podClaim["name"] == "glia-x7" && podClaim["uid"] == "uid-fs-1", "token claims %v do not name the pod", claims)
		}
		check(strings.Contains(out, "ca=CA-PEM\n") && strings.Contains(out, "mode=native\n"), "ca.crt or configMap volume:\n%s", out)

		// The Bidirectional mount made inside the container shows at the
		// node-side path and outlives the container.
		b, err := os.ReadFile(filepath.Join(hostPath, "inner/file"))
		check(err == nil && string(b) == "made-inside\n", "the container's mount under the Bidirectional volume is not on the node: %q %v", b, err)
		mounts, _ := mountinfo.Read()
		_, ok := mountinfo.At(mounts, filepath.Join(hostPath, "inner"))
		if !ok {
			b, _ := os.ReadFile("/proc/thread-self/mountinfo")
			errs = append(errs, fmt.Errorf("no mount at %s in the node's namespace after the container exited:\n%s\ncontainer:\n%s", filepath.Join(hostPath, "inner"), b, out))
		}

		// The glia image: /usr/bin/glia-agent from the bin dir, run as
		// written through PATH, with $(NODE_NAME) expanded.
		out, err = runSpec(w, pod, gliaC, filepath.Join(base, "glia.log"))
		if err != nil {
			return err
		}
		check(strings.Contains(out, "glia-agent --node-name=n1\n") && strings.Contains(out, "ns=glia-system\n"), "glia image container:\n%s", out)

		// A built-in image (the glia binary's echo server) still runs
		// inside the container's root.
		echo := &corev1.Container{Name: "echo", Image: "glia/echo", Ports: []corev1.ContainerPort{{ContainerPort: int32(freePort(t))}}}
		spec, err := w.launchSpec(context.Background(), pod, echo)
		if err != nil {
			return err
		}
		logf, err := os.Create(filepath.Join(base, "echo.log"))
		if err != nil {
			return err
		}
		defer logf.Close()
		cmd := exec.Command(self, append([]string{"lab", "_pod-init"}, spec.opts.Args()...)...)
		cmd.Env, cmd.Stdout, cmd.Stderr = spec.env, logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS}
		if err := cmd.Start(); err != nil {
			return err
		}
		var body string
		for i := 0; i < 100 && !strings.Contains(body, "hello from"); i++ {
			time.Sleep(50 * time.Millisecond)
			if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", echo.Ports[0].ContainerPort)); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
			}
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logb, _ := os.ReadFile(filepath.Join(base, "echo.log"))
		check(body == "hello from n1\n", "built-in echo image answered %q, want the node's hostname (a host-network pod); log:\n%s", body, logb)

		// Clean up what this node namespace holds (the thread's end would
		// too) and the pod's volumes.
		w.releaseVolumes()
		return errors.Join(errs...)
	})

	if _, err := os.Lstat("/etc/" + marker); err == nil {
		os.Remove("/etc/" + marker)
		t.Errorf("a container's write to / reached the host")
	}
	hostTableAfter, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(hostTableAfter), "\n") {
		if strings.Contains(l, base) && !bytes.Contains(hostTableBefore, []byte(l)) {
			t.Errorf("a node or container mount reached the host: %s", l)
		}
	}
	if _, err := os.Stat(filepath.Join(hostPath, "inner")); err == nil {
		if _, ok := mountinfo.At(mustMounts(t), filepath.Join(hostPath, "inner")); ok {
			t.Errorf("the Bidirectional mount shows in the host's namespace")
		}
	}
}

// freePort returns a TCP port free on loopback right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func mustMounts(t *testing.T) []mountinfo.Mount {
	t.Helper()
	m, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPrivilegedLivenessRestart runs a real container whose liveness exec
// probe (run inside its pivoted root through nsenter) starts failing: the
// runner kills it and starts it again, counting the restart.
func TestPrivilegedLivenessRestart(t *testing.T) {
	requireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Node, cfg.NodeIP, cfg.StateDir, cfg.SelfExe = "n1", "198.18.0.11", stateDir, self
	cfg.CNIConfDir, cfg.CNIBinDir = "/nonexistent", "/nonexistent"
	cfg.Cgroup = testCgroup(t)
	sb, err := NewHostSandbox(slog.New(slog.NewTextHandler(io.Discard, nil)), cfg)
	if err != nil {
		t.Fatal(err)
	}
	pod := testPod("live-real", "uid-live-real-"+randHex(t), corev1.Container{
		Name: "app", Image: "busybox",
		Command: []string{"sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 1000"},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/healthy"}}},
			InitialDelaySeconds: 1, PeriodSeconds: 1, FailureThreshold: 1,
		},
	})
	pod.Spec.HostNetwork = true
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1)
	client := fake.NewClientset(pod, kubernetesSvc())
	tr := startRunner(t, client, sb, stateDir)
	t.Cleanup(func() {
		// Delete the pod and wait for its teardown before the runner stops.
		client.CoreV1().Pods("default").Delete(context.Background(), pod.Name, metav1.DeleteOptions{})
		eventually(t, "pod torn down", func() (bool, error) {
			states, err := tr.r.store.Load()
			return len(states) == 0, err
		})
		tr.stop()
	})
	eventually(t, "pod running", podReady(client, "live-real"))
	eventually(t, "a restart after the liveness probe failed", func() (bool, error) {
		p := getPod(t, client, "default", "live-real")
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].RestartCount >= 1 && cs[0].State.Running != nil, nil
	})
	cs := getPod(t, client, "default", "live-real").Status.ContainerStatuses[0]
	if lt := cs.LastTerminationState.Terminated; lt == nil || (lt.ExitCode != 143 && lt.ExitCode != 137) {
		t.Errorf("last termination %+v, want the probe's SIGTERM or SIGKILL", cs.LastTerminationState)
	}
	// The host's /tmp never held the container's file.
	if _, err := os.Stat("/tmp/healthy"); err == nil {
		t.Errorf("/tmp/healthy exists on the host: the container wrote through")
	}
}

// TestPrivilegedNodeMounts checks --bind in a node namespace: node-local
// directories over host paths (created when missing on the node side), a
// bind nested in an earlier one, and a refusal for a host mount point that
// does not exist.
func TestPrivilegedNodeMounts(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	host := filepath.Join(base, "host")
	if err := os.MkdirAll(filepath.Join(host, "run/glia"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("run", filepath.Join(host, "varrun")); err != nil { // as /var/run -> /run
		t.Fatal(err)
	}
	root := filepath.Join(base, "nodes/n1/root")
	cg := filepath.Join(base, "cgroup/n1")
	os.MkdirAll(cg, 0o755)
	os.WriteFile(filepath.Join(cg, "cgroup.procs"), nil, 0o644)
	binds := []Bind{
		{Src: filepath.Join(root, "var/run/glia"), Dst: filepath.Join(host, "varrun/glia")},
		{Src: cg, Dst: filepath.Join(host, "run/glia/cgroupv2")}, // inside the first bind
	}
	inNodeNamespace(t, func() error {
		if err := prepareNodeMounts(binds); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(host, "run/glia/cgroupv2/cgroup.procs")); err != nil {
			return fmt.Errorf("nested bind not in place: %w", err)
		}
		if _, err := os.Stat(filepath.Join(root, "var/run/glia/cgroupv2")); err != nil {
			return fmt.Errorf("the nested mount point was not made on the node side: %w", err)
		}
		err := prepareNodeMounts([]Bind{{Src: filepath.Join(root, "x"), Dst: filepath.Join(host, "missing/x")}})
		if err == nil || !strings.Contains(err.Error(), "must exist on the host") {
			return fmt.Errorf("a missing host mount point: %v", err)
		}
		return nil
	})
	// The host's view is untouched: no mount, no node-side dir made there.
	if _, err := os.Stat(filepath.Join(host, "run/glia/cgroupv2")); err == nil {
		t.Errorf("the nested mount point was created on the host")
	}
	if _, ok := mountinfo.At(mustMounts(t), filepath.Join(host, "run/glia")); ok {
		t.Errorf("a node bind shows in the host's namespace")
	}
	if _, err := ParseBind("relative:/x"); err == nil {
		t.Error("ParseBind accepted a relative source")
	}
	if b, err := ParseBind("/a/b:/c/"); err != nil || b != (Bind{Src: "/a/b", Dst: "/c"}) {
		t.Errorf("ParseBind = %+v, %v", b, err)
	}
}
