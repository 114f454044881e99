package noderunner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/lab/podinit"
	"glia.dev/glia/internal/lab/podinit/mountinfo"
)

// Bind is one --bind SRC:DST: a node-local directory SRC shown at DST in
// the node's mount namespace.
type Bind struct {
	Src, Dst string
}

// ParseBind parses SRC:DST (both absolute).
func ParseBind(s string) (Bind, error) {
	src, dst, ok := strings.Cut(s, ":")
	if !ok || !filepath.IsAbs(src) || !filepath.IsAbs(dst) {
		return Bind{}, fmt.Errorf("invalid --bind %q: want SRC:DST with absolute paths", s)
	}
	return Bind{Src: filepath.Clean(src), Dst: filepath.Clean(dst)}, nil
}

func (b Bind) String() string { return b.Src + ":" + b.Dst }

// setupNodeMounts turns the runner's mount namespace into the node's view:
// it refuses unless the runner has a mount namespace of its own (so nothing
// here can change the host), makes every mount shared with the host a
// slave except the named-netns directory (pod netns files must show on the
// host), and bind-mounts each SRC over its DST.
func setupNodeMounts(binds []Bind) error {
	if err := podinit.OwnMountNamespace(); err != nil {
		return fmt.Errorf("the node runner mounts the node's directories and pod volumes, so it must run in a mount namespace of its own (start it with CLONE_NEWNS, as `glia lab` does): %w", err)
	}
	return prepareNodeMounts(binds)
}

// prepareNodeMounts isolates the calling thread's mount namespace from the
// host (but for the netns dir) and applies binds.
func prepareNodeMounts(binds []Bind) error {
	netnsDir := NetNSDir
	if r, err := filepath.EvalSymlinks(netnsDir); err == nil {
		netnsDir = r
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if m.Shared == 0 || mountinfo.Under(m.Point, netnsDir) {
			continue
		}
		// Hidden mounts cannot be named by path, nor mounted on: harmless.
		unix.Mount("", m.Point, "", unix.MS_SLAVE, "")
	}
	var bound []string // resolved DSTs so far
	for _, b := range binds {
		dst, err := os.Stat(b.Dst)
		if errors.Is(err, os.ErrNotExist) && underAnyDir(resolveExisting(b.Dst), bound) {
			// Inside an earlier bind: a node-local directory, not the
			// host's (e.g. /run/glia/cgroupv2 under /var/run/glia).
			if err = os.MkdirAll(b.Dst, 0o755); err == nil {
				dst, err = os.Stat(b.Dst)
			}
		}
		if err != nil {
			return fmt.Errorf("--bind %s: the mount point %s must exist on the host (the lab creates it before starting the runner): %w", b, b.Dst, err)
		}
		if _, err := os.Stat(b.Src); errors.Is(err, os.ErrNotExist) {
			if dst.IsDir() {
				err = os.MkdirAll(b.Src, 0o755)
			} else {
				err = os.WriteFile(b.Src, nil, 0o644)
			}
			if err != nil {
				return fmt.Errorf("--bind %s: create %s: %w", b, b.Src, err)
			}
		}
		if err := unix.Mount(b.Src, b.Dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("--bind %s: %w", b, err)
		}
		bound = append(bound, resolveExisting(b.Dst))
	}
	return nil
}

// resolveExisting resolves the symlinks of p's longest existing ancestor
// (/var/run/glia/x → /run/glia/x).
func resolveExisting(p string) string {
	p = filepath.Clean(p)
	rest := ""
	for cur := p; ; cur = filepath.Dir(cur) {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		if filepath.Dir(cur) == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
	}
}

func underAnyDir(p string, dirs []string) bool {
	for _, d := range dirs {
		if mountinfo.Under(p, d) {
			return true
		}
	}
	return false
}

// nodeMounter is what the runner mounts in the node's mount namespace, behind
// an interface so the pod lifecycle is testable without root.
type nodeMounter interface {
	// EnsureShared makes path a shared mount point (binding it onto itself
	// when it is not a mount point), so that mountPropagation
	// HostToContainer and Bidirectional work from and to it.
	EnsureShared(path string) error
	// MountTmpfs mounts a tmpfs of at most bytes (0: the kernel's default)
	// on dir unless one is mounted there.
	MountTmpfs(dir string, bytes int64) error
	// UnmountUnder detaches every mount at or below dir.
	UnmountUnder(dir string) error
}

type hostMounter struct{}

func (hostMounter) EnsureShared(path string) error {
	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	if m, ok := mountinfo.At(mounts, path); ok {
		if m.Shared != 0 {
			return nil
		}
		if err := unix.Mount("", path, "", unix.MS_SHARED, ""); err != nil {
			return fmt.Errorf("make %s a shared mount: %w", path, err)
		}
		return nil
	}
	if c, ok := mountinfo.Containing(mounts, path); ok && c.Shared != 0 {
		// Binding here would propagate to the host's peer of c.
		return fmt.Errorf("%s lies in %s, a mount shared with the host; mountPropagation on a path inside it is not supported (use %s itself)", path, c.Point, c.Point)
	}
	if err := unix.Mount(path, path, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s onto itself: %w", path, err)
	}
	if err := unix.Mount("", path, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s a shared mount: %w", path, err)
	}
	return nil
}

func (hostMounter) MountTmpfs(dir string, bytes int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if mounts, err := mountinfo.Read(); err == nil {
		if _, ok := mountinfo.At(mounts, dir); ok && st.Type == unix.TMPFS_MAGIC {
			return nil
		}
	}
	opts := "mode=0777"
	if bytes > 0 {
		opts += fmt.Sprintf(",size=%d", bytes)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

func (hostMounter) UnmountUnder(dir string) error {
	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	var points []string
	for _, m := range mounts {
		if mountinfo.Under(m.Point, dir) {
			points = append(points, m.Point)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
