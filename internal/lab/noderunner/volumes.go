package noderunner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// volume is one pod volume as the node provides it.
type volume struct {
	name string
	// path is the volume's directory (or file, for a hostPath file) in the
	// node's view, symlinks resolved.
	path string
	// hostPath is set for hostPath volumes: only they may use
	// mountPropagation.
	hostPath bool
	// readOnly: configMap, secret, downwardAPI and projected volumes are
	// always mounted read-only.
	readOnly bool
}

// volumeError is a volume the runner cannot provide; the pod's containers
// wait in ContainerCreating with its message.
type volumeError struct {
	name string
	err  error
}

func (e volumeError) Error() string {
	return fmt.Sprintf("MountVolume.SetUp failed for volume %q: %v", e.name, e.err)
}
func (e volumeError) Unwrap() error { return e.err }

const defaultVolumeMode = fs.FileMode(0o644)

func volumeDir(st *PodState, plugin, name string) string {
	return filepath.Join(st.Dir, "volumes", "kubernetes.io~"+plugin, name)
}

// setupVolumes makes every volume of pod available on the node and returns
// them by name. It is idempotent and is re-run to refresh configMap, secret,
// downwardAPI and projected volumes and to rotate tokens.
func (w *podWorker) setupVolumes(ctx context.Context, pod *corev1.Pod, st *PodState) (map[string]*volume, error) {
	out := map[string]*volume{}
	var errs []error
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		vol, err := w.setupVolume(ctx, pod, st, v)
		if err != nil {
			errs = append(errs, volumeError{name: v.Name, err: err})
			continue
		}
		out[v.Name] = vol
	}
	return out, errors.Join(errs...)
}

func (w *podWorker) setupVolume(ctx context.Context, pod *corev1.Pod, st *PodState, v *corev1.Volume) (*volume, error) {
	r := w.r
	switch {
	case v.HostPath != nil:
		p, err := checkHostPath(v.HostPath.Path, v.HostPath.Type)
		if err != nil {
			return nil, err
		}
		return &volume{name: v.Name, path: p, hostPath: true}, nil
	case v.EmptyDir != nil:
		dir := volumeDir(st, "empty-dir", v.Name)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return nil, err
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			return nil, err
		}
		switch v.EmptyDir.Medium {
		case corev1.StorageMediumDefault:
		case corev1.StorageMediumMemory:
			var size int64
			if v.EmptyDir.SizeLimit != nil {
				size = v.EmptyDir.SizeLimit.Value()
			}
			if err := r.mounter.MountTmpfs(dir, size); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("emptyDir medium %q is not supported by the lab node runner (use \"\" or Memory)", v.EmptyDir.Medium)
		}
		return &volume{name: v.Name, path: dir}, nil
	case v.ConfigMap != nil, v.Secret != nil, v.DownwardAPI != nil, v.Projected != nil:
		plugin, payload, err := w.volumePayload(ctx, pod, v)
		if err != nil {
			return nil, err
		}
		dir := volumeDir(st, plugin, v.Name)
		changed, err := writeAtomic(dir, payload, r.now())
		if err != nil {
			return nil, err
		}
		if changed && w.volumesReady {
			w.log.Info("volume updated", "volume", v.Name, "type", plugin)
		}
		return &volume{name: v.Name, path: dir, readOnly: true}, nil
	}
	return nil, fmt.Errorf("this volume type is not supported by the lab node runner (it provides hostPath, emptyDir, configMap, secret, downwardAPI and projected volumes)")
}

// checkHostPath applies kubelet's hostPath type checks (creating the path
// for DirectoryOrCreate and FileOrCreate) and returns the path with symlinks
// resolved.
func checkHostPath(path string, typ *corev1.HostPathType) (string, error) {
	t := corev1.HostPathUnset
	if typ != nil {
		t = *typ
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("hostPath %q is not absolute", path)
	}
	st, err := os.Stat(path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("hostPath type check failed: stat %s: %w", path, err)
	}
	switch t {
	case corev1.HostPathUnset:
		if !exists {
			// Kubelet leaves an unset type unchecked; the runtime then
			// creates a missing source as a directory.
			if err := os.MkdirAll(path, 0o755); err != nil {
				return "", fmt.Errorf("create hostPath %s: %w", path, err)
			}
		}
	case corev1.HostPathDirectoryOrCreate:
		if !exists {
			if err := os.MkdirAll(path, 0o755); err != nil {
				return "", fmt.Errorf("hostPath type check failed: create directory %s: %w", path, err)
			}
		} else if !st.IsDir() {
			return "", fmt.Errorf("hostPath type check failed: %s exists and is not a directory", path)
		}
	case corev1.HostPathFileOrCreate:
		if !exists {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return "", fmt.Errorf("hostPath type check failed: create file %s: %w", path, err)
			}
			f.Close()
		} else if !st.Mode().IsRegular() {
			return "", fmt.Errorf("hostPath type check failed: %s exists and is not a file", path)
		}
	case corev1.HostPathDirectory, corev1.HostPathFile, corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev:
		want := map[corev1.HostPathType]struct {
			what string
			ok   func(fs.FileMode) bool
		}{
			corev1.HostPathDirectory: {"a directory", fs.FileMode.IsDir},
			corev1.HostPathFile:      {"a file", fs.FileMode.IsRegular},
			corev1.HostPathSocket:    {"a socket file", func(m fs.FileMode) bool { return m&fs.ModeSocket != 0 }},
			corev1.HostPathCharDev:   {"a character device", func(m fs.FileMode) bool { return m&fs.ModeCharDevice != 0 }},
			corev1.HostPathBlockDev:  {"a block device", func(m fs.FileMode) bool { return m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0 }},
		}[t]
		if !exists {
			return "", fmt.Errorf("hostPath type check failed: %s is not %s (it does not exist)", path, want.what)
		}
		if !want.ok(st.Mode()) {
			return "", fmt.Errorf("hostPath type check failed: %s is not %s", path, want.what)
		}
	default:
		return "", fmt.Errorf("hostPath type %q is not a valid type", t)
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("resolve hostPath %s: %w", path, err)
	}
	return resolved, nil
}

// volumePayload builds the files of a configMap, secret, downwardAPI or
// projected volume; it returns the kubelet plugin name too.
func (w *podWorker) volumePayload(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) (string, map[string]volumeFile, error) {
	payload := map[string]volumeFile{}
	add := func(files map[string]volumeFile) error {
		for p, f := range files {
			if _, dup := payload[p]; dup {
				return fmt.Errorf("two sources of the volume write %q", p)
			}
			payload[p] = f
		}
		return nil
	}
	mode := func(m *int32) fs.FileMode {
		if m == nil {
			return defaultVolumeMode
		}
		return fs.FileMode(*m)
	}
	switch {
	case v.ConfigMap != nil:
		files, err := w.configMapFiles(ctx, pod, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, mode(v.ConfigMap.DefaultMode))
		return "configmap", files, err
	case v.Secret != nil:
		files, err := w.secretFiles(ctx, pod, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, mode(v.Secret.DefaultMode))
		return "secret", files, err
	case v.DownwardAPI != nil:
		files, err := w.downwardFiles(pod, v.DownwardAPI.Items, mode(v.DownwardAPI.DefaultMode))
		return "downward-api", files, err
	}
	def := mode(v.Projected.DefaultMode)
	for _, src := range v.Projected.Sources {
		var files map[string]volumeFile
		var err error
		switch {
		case src.ConfigMap != nil:
			files, err = w.configMapFiles(ctx, pod, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, def)
		case src.Secret != nil:
			files, err = w.secretFiles(ctx, pod, src.Secret.Name, src.Secret.Items, src.Secret.Optional, def)
		case src.DownwardAPI != nil:
			files, err = w.downwardFiles(pod, src.DownwardAPI.Items, def)
		case src.ServiceAccountToken != nil:
			var tok string
			tok, err = w.r.tokens.get(ctx, pod, src.ServiceAccountToken)
			files = map[string]volumeFile{src.ServiceAccountToken.Path: {Data: []byte(tok), Mode: def}}
		default:
			err = errors.New("projected source type is not supported by the lab node runner (it projects configMap, secret, downwardAPI and serviceAccountToken)")
		}
		if err != nil {
			return "", nil, err
		}
		if err := add(files); err != nil {
			return "", nil, err
		}
	}
	return "projected", payload, nil
}

func itemFiles(kind, ns, name string, data map[string][]byte, items []corev1.KeyToPath, optional bool, def fs.FileMode) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = volumeFile{Data: v, Mode: def}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("%s %s/%s has no key %q", kind, ns, name, it.Key)
		}
		m := def
		if it.Mode != nil {
			m = fs.FileMode(*it.Mode)
		}
		out[it.Path] = volumeFile{Data: v, Mode: m}
	}
	return out, nil
}

func (w *podWorker) configMapFiles(ctx context.Context, pod *corev1.Pod, name string, items []corev1.KeyToPath, optional *bool, def fs.FileMode) (map[string]volumeFile, error) {
	cm, err := w.r.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if ptrTrue(optional) {
			return map[string]volumeFile{}, nil
		}
		return nil, fmt.Errorf("configmap %q not found", name)
	}
	if err != nil {
		return nil, fmt.Errorf("get configmap %s/%s: %w", pod.Namespace, name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return itemFiles("configmap", pod.Namespace, name, data, items, ptrTrue(optional), def)
}

func (w *podWorker) secretFiles(ctx context.Context, pod *corev1.Pod, name string, items []corev1.KeyToPath, optional *bool, def fs.FileMode) (map[string]volumeFile, error) {
	s, err := w.r.client.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if ptrTrue(optional) {
			return map[string]volumeFile{}, nil
		}
		return nil, fmt.Errorf("secret %q not found", name)
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %s/%s: %w", pod.Namespace, name, err)
	}
	return itemFiles("secret", pod.Namespace, name, s.Data, items, ptrTrue(optional), def)
}

func (w *podWorker) downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, def fs.FileMode) (map[string]volumeFile, error) {
	out := map[string]volumeFile{}
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = podFieldValue(pod, it.FieldRef.FieldPath, nil, "", true)
		case it.ResourceFieldRef != nil:
			val, err = resourceFieldValue(pod, nil, it.ResourceFieldRef)
		default:
			err = fmt.Errorf("downwardAPI item %q names no field", it.Path)
		}
		if err != nil {
			return nil, err
		}
		m := def
		if it.Mode != nil {
			m = fs.FileMode(*it.Mode)
		}
		out[it.Path] = volumeFile{Data: []byte(val), Mode: m}
	}
	return out, nil
}

// releaseVolumes unmounts what the runner mounted for the pod's volumes
// (memory-backed emptyDirs) so the pod dir can be removed.
func (w *podWorker) releaseVolumes() error {
	if w.st == nil {
		return nil
	}
	w.r.tokens.forget(w.uid)
	return w.r.mounter.UnmountUnder(filepath.Join(w.st.Dir, "volumes"))
}

// subPathSource resolves a volumeMount's subPath inside the volume, never
// leaving it (symlinks are followed within it), creating a missing subPath
// as a directory as kubelet does.
func subPathSource(vol *volume, sub string) (string, error) {
	if sub == "" {
		return vol.path, nil
	}
	if filepath.IsAbs(sub) || strings.HasPrefix(filepath.Clean(sub), "..") {
		return "", fmt.Errorf("subPath %q must be a relative path inside the volume", sub)
	}
	p, err := secureJoin(vol.path, sub)
	if err != nil {
		return "", err
	}
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		if vol.readOnly {
			return "", fmt.Errorf("subPath %q does not exist in the volume", sub)
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return "", fmt.Errorf("create subPath %q: %w", sub, err)
		}
	}
	return p, nil
}

// podVolumes is a pod worker's view of its volumes.
type podVolumes struct {
	vols map[string]*volume
	// volumesReady is set once the volumes were set up; volumeSyncAt is
	// when they are refreshed next.
	volumesReady bool
	volumeSyncAt time.Time
}

func (w *podWorker) setVolumes(vols map[string]*volume) {
	w.vols = vols
	w.volumesReady = true
	w.volumeSyncAt = w.r.now().Add(w.r.cfg.VolumeResync)
	if t := w.r.tokens.nextRefresh(w.uid); !t.IsZero() && t.Before(w.volumeSyncAt) {
		w.volumeSyncAt = t
	}
}

// syncVolumes refreshes the pod's volumes when due (configMap and secret
// contents, downwardAPI fields, token rotation). Before its volumes were
// set up (a pod re-adopted from an earlier runner) it reports false while
// they cannot be, and the containers wait in ContainerCreating.
func (w *podWorker) syncVolumes(ctx context.Context, pod *corev1.Pod) bool {
	if w.volumesReady && w.r.now().Before(w.volumeSyncAt) {
		return true
	}
	vols, err := w.setupVolumes(ctx, pod, w.st)
	if err != nil {
		if !w.volumesReady {
			if msg := err.Error(); msg != w.sandboxErr {
				w.log.Warn("pod volumes", "err", err)
				w.sandboxErr = msg
			}
			for _, c := range allContainers(pod) {
				if _, running := w.procs[c.Name]; !running {
					w.waiting[c.Name] = waitReason{"ContainerCreating", err.Error()}
				}
			}
			w.volumeSyncAt = w.r.now().Add(backoff(2))
			return false
		}
		// Keep what the containers have; kubelet retries on its next sync.
		w.log.Warn("refresh pod volumes", "err", err)
		for name, v := range vols {
			w.vols[name] = v
		}
		w.volumeSyncAt = w.r.now().Add(w.r.cfg.VolumeResync)
		return true
	}
	if !w.volumesReady {
		for _, c := range allContainers(pod) {
			if wr, ok := w.waiting[c.Name]; ok && wr.reason == "ContainerCreating" {
				delete(w.waiting, c.Name)
			}
		}
		w.sandboxErr = ""
	}
	w.setVolumes(vols)
	return true
}
