package noderunner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"glia.dev/glia/internal/lab/images"
	"glia.dev/glia/internal/lab/podinit"
)

func secureJoin(root, p string) (string, error) {
	out, err := securejoin.SecureJoin(root, p)
	if err != nil {
		return "", fmt.Errorf("resolve %s in %s: %w", p, root, err)
	}
	return out, nil
}

// launchSpec is everything needed to start one container.
type launchSpec struct {
	argv []string
	env  []string
	opts podinit.Options
}

// startError carries the waiting reason kubelet would report.
type startError struct {
	reason string
	err    error
}

func (e startError) Error() string { return e.err.Error() }
func (e startError) Unwrap() error { return e.err }

// launchSpec builds container c's environment, program and root
// filesystem, as kubelet and the runtime do before starting it.
func (w *podWorker) launchSpec(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (launchSpec, error) {
	env, err := w.r.containerEnv(ctx, pod, c, w.podIPs())
	if err != nil {
		return launchSpec{}, startError{"CreateContainerConfigError", err}
	}
	ic := catalogContainer(c)
	ic.Command = expandCommand(c.Command, env)
	ic.Args = expandCommand(c.Args, env)
	plan, err := images.Resolve(ic)
	if err != nil {
		return launchSpec{}, startError{"ErrImagePull", err}
	}
	files, err := plan.HostFiles(w.r.imageBin)
	if err != nil {
		return launchSpec{}, startError{"ErrImagePull", err}
	}
	argv, err := w.r.programArgv(w.st, plan, files, envValue(env, "PATH"))
	if err != nil {
		return launchSpec{}, startError{"CreateContainerError", err}
	}
	opts, err := w.containerOptions(pod, c, argv, files, env)
	if err != nil {
		return launchSpec{}, startError{"CreateContainerConfigError", err}
	}
	return launchSpec{argv: argv, env: env, opts: opts}, nil
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

func (w *podWorker) podIPs() []string {
	if w.st == nil {
		return nil
	}
	if w.st.HostNetwork {
		return []string{w.r.cfg.NodeIP}
	}
	return w.st.PodIPs
}

// programArgv turns a catalog plan into the program to run, checking it can
// be found in the container (the image's files, or the node's root through
// the overlay) with the container's PATH.
func (r *runner) programArgv(st *PodState, plan images.Plan, files map[string]string, path string) ([]string, error) {
	switch plan.Kind {
	case images.KindBuiltin:
		return append([]string{r.selfExe, "lab", "_image", plan.Builtin}, plan.Args...), nil
	case images.KindHost:
		if err := findProgram(plan.Args[0], path, files); err != nil {
			return nil, fmt.Errorf("image %s: %w", plan.Repository, err)
		}
		return plan.Args, nil
	case images.KindCoreDNS:
		if _, err := os.Stat(r.coredns); err != nil {
			return nil, fmt.Errorf("image %s needs the coredns binary at %s (go install github.com/coredns/coredns@v1.15.0 and copy it beside glia): %w", plan.Repository, r.coredns, err)
		}
		kubeconfig := r.cfg.Kubeconfig
		if kubeconfig != "" {
			if abs, err := filepath.Abs(kubeconfig); err == nil {
				kubeconfig = abs
			}
		}
		p := filepath.Join(st.Dir, "Corefile")
		if err := os.WriteFile(p, []byte(Corefile(r.cfg.ClusterDomain, kubeconfig)), 0o644); err != nil {
			return nil, fmt.Errorf("write Corefile: %w", err)
		}
		return []string{r.coredns, "-conf", p}, nil
	}
	return nil, fmt.Errorf("unknown plan kind %v", plan.Kind)
}

// findProgram looks prog up as the container will: in the image's files
// first, then in the node's root, through PATH unless it has a slash.
func findProgram(prog, path string, files map[string]string) error {
	exists := func(p string) bool {
		if _, ok := files[p]; ok {
			return true
		}
		st, err := os.Stat(p)
		return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
	}
	if strings.Contains(prog, "/") {
		if exists(prog) {
			return nil
		}
		return fmt.Errorf("exec: %q: no such executable file in the container", prog)
	}
	for _, dir := range filepath.SplitList(path) {
		if dir != "" && exists(filepath.Join(dir, prog)) {
			return nil
		}
	}
	return fmt.Errorf("exec: %q: executable file not found in $PATH (%s)", prog, path)
}

// freshDirs are what every container gets fresh (podinit mounts them): the
// node's files below them are hidden from it.
var freshDirs = []string{"/proc", "/sys", "/dev", "/tmp", "/run"}

// visibleInContainer reports whether a container sees the node's file at
// path through its root overlay: the overlay's lower layer is the node's
// root file system alone (not what is mounted on it), and the container's
// fresh /tmp, /run… hide what lies below them.
func visibleInContainer(path string) bool {
	if r, err := filepath.EvalSymlinks(path); err == nil {
		path = r
	}
	for _, d := range freshDirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return false
		}
	}
	var root, st unix.Stat_t
	if unix.Stat("/", &root) != nil || unix.Stat(path, &st) != nil {
		return false
	}
	return root.Dev == st.Dev
}

// containerOptions is the root filesystem of container c: image files,
// host programs the overlay does not show, and the volume mounts.
func (w *podWorker) containerOptions(pod *corev1.Pod, c *corev1.Container, argv []string, files map[string]string, env []string) (podinit.Options, error) {
	o := w.initOptions(pod, c, argv)
	o.Scratch = filepath.Join(w.st.Dir, "containers", c.Name)
	if err := os.MkdirAll(o.Scratch, 0o700); err != nil {
		return o, fmt.Errorf("create container scratch dir: %w", err)
	}
	if q, ok := c.Resources.Limits[corev1.ResourceEphemeralStorage]; ok {
		o.ScratchBytes = q.Value()
	}
	if c.WorkingDir != "" {
		o.Dir = c.WorkingDir
	}
	if err := runAs(&o, pod, c); err != nil {
		return o, err
	}
	if sc := c.SecurityContext; sc != nil {
		o.Privileged = sc.Privileged != nil && *sc.Privileged
		o.ReadOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
		o.NoNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation && !o.Privileged
		if caps := sc.Capabilities; caps != nil {
			for _, a := range caps.Add {
				o.CapAdd = append(o.CapAdd, string(a))
			}
			for _, d := range caps.Drop {
				o.CapDrop = append(o.CapDrop, string(d))
			}
		}
		if _, err := podinit.CapabilitySet(o.CapAdd, o.CapDrop); err != nil {
			return o, err
		}
	}
	// The image's files, in a stable order.
	targets := make([]string, 0, len(files))
	for t := range files {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	for _, t := range targets {
		o.Mounts = append(o.Mounts, podinit.Mount{Source: files[t], Target: t, ReadOnly: true})
	}
	// Host programs and files the container would not see (on another
	// file system than the node's /, or under its fresh /tmp or /run)
	// appear at their own path.
	var hostFiles []string
	if len(argv) > 0 && filepath.IsAbs(argv[0]) {
		if _, ok := files[argv[0]]; !ok {
			hostFiles = append(hostFiles, argv[0])
		}
	}
	for _, a := range argv[1:] {
		if filepath.IsAbs(a) && strings.HasPrefix(a, w.st.Dir+"/") {
			hostFiles = append(hostFiles, a) // the Corefile
		}
	}
	if len(argv) > 0 && argv[0] == w.r.coredns && w.r.cfg.Kubeconfig != "" {
		if abs, err := filepath.Abs(w.r.cfg.Kubeconfig); err == nil {
			hostFiles = append(hostFiles, abs)
		}
	}
	for _, f := range hostFiles {
		if !visibleInContainer(f) {
			o.Mounts = append(o.Mounts, podinit.Mount{Source: f, Target: f, ReadOnly: true})
		}
	}

	// Volumes, parents before children (as containerd orders them).
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	lookup := func(n string) (string, bool) { v, ok := vals[n]; return v, ok }
	vms := append([]corev1.VolumeMount(nil), c.VolumeMounts...)
	sort.SliceStable(vms, func(i, j int) bool { return depth(vms[i].MountPath) < depth(vms[j].MountPath) })
	for _, vm := range vms {
		vol := w.vols[vm.Name]
		if vol == nil {
			return o, fmt.Errorf("volumeMount %q names no volume of the pod", vm.Name)
		}
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expandVars(vm.SubPathExpr, lookup)
		}
		src, err := subPathSource(vol, sub)
		if err != nil {
			return o, fmt.Errorf("volume %q: %w", vm.Name, err)
		}
		m := podinit.Mount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly || vol.readOnly, Propagation: podinit.PropagationPrivate}
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case corev1.MountPropagationNone:
			case corev1.MountPropagationHostToContainer:
				m.Propagation = podinit.PropagationSlave
			case corev1.MountPropagationBidirectional:
				if !o.Privileged {
					return o, fmt.Errorf("volume %q: mountPropagation Bidirectional needs a privileged container", vm.Name)
				}
				m.Propagation = podinit.PropagationShared
			default:
				return o, fmt.Errorf("volume %q: unknown mountPropagation %q", vm.Name, *vm.MountPropagation)
			}
			if m.Propagation != podinit.PropagationPrivate {
				if err := w.r.mounter.EnsureShared(src); err != nil {
					return o, fmt.Errorf("volume %q: mountPropagation %s: %w", vm.Name, *vm.MountPropagation, err)
				}
			}
		}
		o.Mounts = append(o.Mounts, m)
	}
	return o, nil
}

// runAs sets the user the container runs as from the container's and the
// pod's securityContext (the container's wins), and enforces runAsNonRoot:
// the lab's images have no user of their own, so they run as root unless
// told otherwise.
func runAs(o *podinit.Options, pod *corev1.Pod, c *corev1.Container) error {
	var uid, gid *int64
	var nonRoot *bool
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid, nonRoot = psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
		for _, g := range psc.SupplementalGroups {
			o.Groups = append(o.Groups, int(g))
		}
		if psc.FSGroup != nil {
			o.Groups = append(o.Groups, int(*psc.FSGroup))
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
	}
	if nonRoot != nil && *nonRoot && (uid == nil || *uid == 0) {
		if uid == nil {
			return fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod.Namespace+"/"+pod.Name, c.Name)
		}
		return fmt.Errorf("container's runAsUser breaks non-root policy (pod: %q, container: %s)", pod.Namespace+"/"+pod.Name, c.Name)
	}
	if uid != nil {
		o.UID = ptrInt(*uid)
		if gid == nil {
			o.GID = ptrInt(0) // the image has no passwd entry: group root, as runtimes do
		}
	}
	if gid != nil {
		o.GID = ptrInt(*gid)
	}
	return nil
}

func ptrInt(v int64) *int { i := int(v); return &i }

func depth(p string) int { return len(strings.Split(filepath.Clean(p), "/")) }
