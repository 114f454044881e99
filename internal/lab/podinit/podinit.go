// Package podinit is the first program of every lab container
// (`glia lab _pod-init`). The node runner starts it in fresh mount and UTS
// namespaces inside the pod's network namespace (the node's for host-network
// pods); it builds the container's root filesystem as a container runtime
// does and then execs the container's program, which keeps its PID:
//
//   - every mount it inherited that could propagate back to the node becomes
//     a slave, except the sources of Bidirectional volumes;
//   - a scratch tmpfs of the container's own holds the upper and work
//     directories of an overlay whose lower layer is the node's "/": what the
//     container writes to its root lands in memory and dies with it;
//   - fresh /proc, /sys (sysfs of the container's network namespace), /dev
//     (a tmpfs with device nodes: every host device for a privileged
//     container, null/zero/full/random/urandom/tty for others), /dev/pts,
//     /dev/shm, /tmp and /run;
//   - the image's files, the pod's resolv.conf, hosts and hostname, and the
//     volumes (with readOnly and mountPropagation) are bind-mounted;
//   - pivot_root into it; the old root is made a recursive slave and lazily
//     detached, so no unmount reaches the node;
//   - the hostname is set, an unprivileged container keeps only the default
//     capability set (plus securityContext adds, minus drops), and the
//     program is looked up through the container's PATH inside it.
//
// It refuses to touch mounts or the hostname unless it runs in mount and UTS
// namespaces of its own (different from its parent's), so running it by hand
// cannot change the host.
package podinit

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Propagation is a volume mount's propagation, as Kubernetes'
// mountPropagation: None, HostToContainer and Bidirectional.
type Propagation string

const (
	// PropagationPrivate (None): the mount is recursively private.
	PropagationPrivate Propagation = "rprivate"
	// PropagationSlave (HostToContainer): mounts the node makes under the
	// source appear in the container.
	PropagationSlave Propagation = "rslave"
	// PropagationShared (Bidirectional): mounts propagate both ways; the
	// source must be a shared mount point in the node's mount namespace.
	PropagationShared Propagation = "rshared"
)

// Mount is one bind mount into the container's root.
type Mount struct {
	// Source is the path in the node's view (the runner's mount namespace).
	Source string `json:"source"`
	// Target is the path inside the container.
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	// Propagation defaults to PropagationPrivate.
	Propagation Propagation `json:"propagation,omitempty"`
}

// Options are _pod-init's settings; Args and Parse carry them on its
// command line.
type Options struct {
	Hostname string `json:"hostname,omitempty"`
	// ResolvConf, Hosts and HostnameFile are files bind-mounted over
	// /etc/resolv.conf, /etc/hosts and /etc/hostname when set.
	ResolvConf   string `json:"resolvConf,omitempty"`
	Hosts        string `json:"hosts,omitempty"`
	HostnameFile string `json:"hostnameFile,omitempty"`
	// CgroupProcs is a cgroup.procs file to join before exec, for runtimes
	// that cannot start the process in its cgroup.
	CgroupProcs string `json:"cgroupProcs,omitempty"`
	// Dir is the working directory of the program, inside the container.
	Dir string `json:"dir,omitempty"`

	// Scratch is an empty directory (in the node's view) on which the
	// container's scratch tmpfs is mounted, in the container's mount
	// namespace only. Required.
	Scratch string `json:"scratch"`
	// ScratchBytes limits the scratch tmpfs (what the container may write
	// to its root); 0 is the kernel's default.
	ScratchBytes int64 `json:"scratchBytes,omitempty"`
	// Privileged gives the container every capability and the node's
	// devices; otherwise it gets DefaultCapabilities and no host device.
	Privileged bool `json:"privileged,omitempty"`
	// CapAdd and CapDrop change an unprivileged container's capabilities
	// (names as in securityContext.capabilities; "ALL" is allowed).
	CapAdd  []string `json:"capAdd,omitempty"`
	CapDrop []string `json:"capDrop,omitempty"`
	// NoNewPrivs sets no_new_privs (allowPrivilegeEscalation: false).
	NoNewPrivs bool `json:"noNewPrivs,omitempty"`
	// UID, GID and Groups are the user the program runs as
	// (runAsUser, runAsGroup, supplementalGroups); nil UID/GID: root.
	UID    *int  `json:"uid,omitempty"`
	GID    *int  `json:"gid,omitempty"`
	Groups []int `json:"groups,omitempty"`
	// ReadOnlyRoot makes the root filesystem read-only.
	ReadOnlyRoot bool `json:"readOnlyRoot,omitempty"`
	// Mounts are the image's files and the volumes, in order.
	Mounts []Mount `json:"mounts,omitempty"`

	// Argv is the program and its arguments.
	Argv []string `json:"-"`
}

// Args renders o as _pod-init's command line (without the command name).
func (o Options) Args() []string {
	b, err := json.Marshal(o)
	if err != nil {
		panic(fmt.Sprintf("encode pod-init options: %v", err)) // only plain types: cannot fail
	}
	return append([]string{"--spec", string(b), "--"}, o.Argv...)
}

// Parse parses _pod-init's command line.
func Parse(args []string) (Options, error) {
	var spec string
	fs := flag.NewFlagSet("_pod-init", flag.ContinueOnError)
	fs.StringVar(&spec, "spec", "", "the container's settings (JSON)")
	if err := fs.Parse(args); err != nil {
		return Options{}, fmt.Errorf("parse _pod-init flags: %w", err)
	}
	var o Options
	if spec == "" {
		return Options{}, errors.New("_pod-init: --spec is required")
	}
	if err := json.Unmarshal([]byte(spec), &o); err != nil {
		return Options{}, fmt.Errorf("_pod-init: decode --spec: %w", err)
	}
	o.Argv = fs.Args()
	if len(o.Argv) == 0 {
		return Options{}, errors.New("_pod-init: no program given after --")
	}
	if o.Scratch == "" {
		return Options{}, errors.New("_pod-init: the spec names no scratch directory")
	}
	if _, err := parseCaps(o.CapAdd); err != nil {
		return Options{}, err
	}
	if _, err := parseCaps(o.CapDrop); err != nil {
		return Options{}, err
	}
	for _, m := range o.Mounts {
		switch m.Propagation {
		case "", PropagationPrivate, PropagationSlave, PropagationShared:
		default:
			return Options{}, fmt.Errorf("_pod-init: mount %s: unknown propagation %q", m.Target, m.Propagation)
		}
		if m.Source == "" || m.Target == "" || m.Target[0] != '/' {
			return Options{}, fmt.Errorf("_pod-init: mount %q -> %q: source and an absolute target are required", m.Source, m.Target)
		}
	}
	return o, nil
}

// Main runs _pod-init with args (everything after the command name). On
// success it does not return: the process becomes the container's program.
func Main(args []string) error {
	o, err := Parse(args)
	if err != nil {
		return err
	}
	// Capabilities and the bounding set are per thread: set them on the
	// thread that execs.
	runtime.LockOSThread()
	if err := ownNamespace("mnt"); err != nil {
		return err
	}
	if err := ownNamespace("uts"); err != nil {
		return err
	}
	if o.CgroupProcs != "" {
		if err := os.WriteFile(o.CgroupProcs, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	if err := buildRoot(o); err != nil {
		return err
	}
	if o.Hostname != "" {
		if err := unix.Sethostname([]byte(o.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", o.Hostname, err)
		}
	}
	if o.Dir != "" {
		// As runtimes do, a missing working directory is created (inside
		// the container: the root is already pivoted).
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return fmt.Errorf("create the working directory: %w", err)
		}
		if err := os.Chdir(o.Dir); err != nil {
			return fmt.Errorf("chdir to the working directory: %w", err)
		}
	}
	// Resolve the program inside the container, with its PATH, while the
	// capabilities still allow reading any directory.
	path, err := exec.LookPath(o.Argv[0])
	if err != nil && !errors.Is(err, exec.ErrDot) {
		return fmt.Errorf("find program in the container: %w", err)
	}
	if err := setCredentials(o); err != nil {
		return err
	}
	if o.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	if err := syscall.Exec(path, o.Argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}

// ownNamespace fails unless this process's namespace of kind differs from its
// parent's: both the calling thread's (which does the mounts) and the
// process's (a thread may have unshared one of its own, e.g. in tests).
func ownNamespace(kind string) error {
	parent, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", os.Getppid(), kind))
	if err != nil {
		return fmt.Errorf("read parent's %s namespace: %w", kind, err)
	}
	for _, who := range []string{"thread-self", "self"} {
		own, err := os.Readlink("/proc/" + who + "/ns/" + kind)
		if err != nil {
			return fmt.Errorf("read own %s namespace: %w", kind, err)
		}
		if own == parent {
			return fmt.Errorf("refusing to run: must be started in a new %s namespace (it shares %s with its parent)", kind, own)
		}
	}
	return nil
}

// OwnMountNamespace fails unless this process runs in a mount namespace
// other than its parent's. The node runner checks it before it mounts
// anything.
func OwnMountNamespace() error { return ownNamespace("mnt") }
