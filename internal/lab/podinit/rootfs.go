package podinit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/lab/podinit/mountinfo"
)

// unprivilegedDevices are the device nodes every container gets (bind
// mounts of the node's, so /dev itself can stay nodev).
var unprivilegedDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// maskedPaths and readOnlyPaths are what runtimes hide from, or make
// read-only for, unprivileged containers.
var (
	maskedPaths   = []string{"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	readOnlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// buildRoot builds the container's root filesystem under o.Scratch and
// pivots into it. See the package doc for the steps.
func buildRoot(o Options) error {
	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	if err := isolate(mounts, o); err != nil {
		return err
	}
	root, err := mountOverlay(o)
	if err != nil {
		return err
	}
	if err := mountSystem(root, mounts, o.Privileged); err != nil {
		return err
	}
	for _, m := range []struct{ src, dst string }{
		{o.ResolvConf, "/etc/resolv.conf"},
		{o.Hosts, "/etc/hosts"},
		{o.HostnameFile, "/etc/hostname"},
	} {
		if m.src == "" {
			continue
		}
		if err := bindInto(root, Mount{Source: m.src, Target: m.dst}, o.Privileged); err != nil {
			return err
		}
	}
	for _, m := range o.Mounts {
		if err := bindInto(root, m, o.Privileged); err != nil {
			return err
		}
	}
	if !o.Privileged {
		if err := restrictPaths(root); err != nil {
			return err
		}
	}
	if o.ReadOnlyRoot {
		if err := setAttr(root, false, unix.MOUNT_ATTR_RDONLY); err != nil {
			return fmt.Errorf("make the root file system read-only: %w", err)
		}
	}
	return pivot(root)
}

// isolate makes every shared mount a slave, so nothing mounted from here on
// propagates to the node, except the sources of Bidirectional volumes
// (and what lies under them), which must stay peers of the node's mounts.
func isolate(mounts []mountinfo.Mount, o Options) error {
	var keep []string
	for _, m := range o.Mounts {
		if m.Propagation != PropagationShared {
			continue
		}
		src := filepath.Clean(m.Source)
		mi, ok := mountinfo.At(mounts, src)
		if !ok || mi.Shared == 0 {
			return fmt.Errorf("volume at %s: mountPropagation Bidirectional needs %s to be a shared mount point in the node's mount namespace (the node runner makes it one)", m.Target, src)
		}
		if src == "/" {
			return fmt.Errorf("volume at %s: mountPropagation Bidirectional of the node's / is not supported", m.Target)
		}
		keep = append(keep, src)
	}
	for _, m := range mounts {
		if m.Shared == 0 || underAny(m.Point, keep) {
			continue
		}
		// A mount hidden under another one cannot be named by its path;
		// it cannot be mounted on either, so it is harmless. The check
		// below covers what matters.
		unix.Mount("", m.Point, "", unix.MS_SLAVE, "")
	}
	after, err := mountinfo.Read()
	if err != nil {
		return err
	}
	for _, p := range []string{"/", o.Scratch} {
		if mi, ok := mountinfo.Containing(after, p); ok && mi.Shared != 0 {
			return fmt.Errorf("mount %s holding %s is still shared with the node after isolation; refusing to mount there", mi.Point, p)
		}
	}
	return nil
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if mountinfo.Under(p, d) {
			return true
		}
	}
	return false
}

// mountOverlay mounts the scratch tmpfs and the overlay on top of the
// node's root; it returns the overlay's path.
func mountOverlay(o Options) (string, error) {
	scratch := filepath.Clean(o.Scratch)
	if strings.ContainsAny(scratch, ",:\\") {
		return "", fmt.Errorf("scratch directory %q contains ',', ':' or '\\', which overlay options cannot carry", scratch)
	}
	opts := "mode=0700"
	if o.ScratchBytes > 0 {
		opts += fmt.Sprintf(",size=%d", o.ScratchBytes)
	}
	if err := unix.Mount("tmpfs", scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return "", fmt.Errorf("mount the container's scratch tmpfs on %s: %w", scratch, err)
	}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(scratch, d), 0o755); err != nil {
			return "", fmt.Errorf("create scratch %s dir: %w", d, err)
		}
	}
	root := filepath.Join(scratch, "root")
	var flags uintptr
	if !o.Privileged {
		flags |= unix.MS_NODEV
	}
	data := fmt.Sprintf("lowerdir=/,upperdir=%s/upper,workdir=%s/work", scratch, scratch)
	if err := unix.Mount("overlay", root, "overlay", flags, data); err != nil {
		return "", fmt.Errorf("mount the root overlay (%s): %w", data, err)
	}
	return root, nil
}

// target resolves path inside root, following symlinks as the container
// would (never out of root), and creates it as a directory or an empty file
// when missing.
func target(root, path string, dir bool) (string, error) {
	p, err := securejoin.SecureJoin(root, path)
	if err != nil {
		return "", fmt.Errorf("resolve %s in the container: %w", path, err)
	}
	if dir {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return "", fmt.Errorf("create mount point %s in the container: %w", path, err)
		}
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", fmt.Errorf("create the directory of mount point %s in the container: %w", path, err)
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		if errors.Is(err, unix.EISDIR) {
			return "", fmt.Errorf("mount point %s in the container is a directory, the source is a file", path)
		}
		return "", fmt.Errorf("create mount point %s in the container: %w", path, err)
	}
	f.Close()
	return p, nil
}

func mountFS(root, path, fstype string, flags uintptr, data string) error {
	p, err := target(root, path, true)
	if err != nil {
		return err
	}
	if err := unix.Mount(fstype, p, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, path, err)
	}
	return nil
}

// mountSystem mounts /proc, /sys, /dev, /tmp and /run of the container.
func mountSystem(root string, mounts []mountinfo.Mount, privileged bool) error {
	const common = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := mountFS(root, "/proc", "proc", common, ""); err != nil {
		return err
	}
	sysFlags := uintptr(common)
	if !privileged {
		sysFlags |= unix.MS_RDONLY
	}
	// A fresh sysfs shows the container's network namespace in
	// /sys/class/net (the node's for host-network pods).
	if err := mountFS(root, "/sys", "sysfs", sysFlags, ""); err != nil {
		return err
	}
	if privileged {
		// What is mounted under the node's /sys (cgroup, bpffs, debugfs…).
		sys, ok := mountinfo.At(mounts, "/sys")
		if ok {
			for _, m := range mounts {
				if m.Parent != sys.ID || !mountinfo.Under(m.Point, "/sys") || m.Point == "/sys" {
					continue
				}
				dst, err := securejoin.SecureJoin(root, m.Point)
				if err != nil {
					return err
				}
				if _, err := os.Stat(dst); err != nil {
					continue // sysfs of this kernel has no such directory
				}
				if err := unix.Mount(m.Point, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
					return fmt.Errorf("bind %s: %w", m.Point, err)
				}
				if err := unix.Mount("", dst, "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
					return fmt.Errorf("make %s a slave: %w", m.Point, err)
				}
			}
		}
	}
	if err := mountDev(root, privileged); err != nil {
		return err
	}
	if err := mountFS(root, "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	return mountFS(root, "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
}

// mountDev gives the container a /dev of its own: a tmpfs with the node's
// device nodes for a privileged container, the default few otherwise, and
// fresh devpts and shm.
func mountDev(root string, privileged bool) error {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NOEXEC)
	if !privileged {
		flags |= unix.MS_NODEV
	}
	if err := mountFS(root, "/dev", "tmpfs", flags, "mode=0755,size=65536k"); err != nil {
		return err
	}
	dev := filepath.Join(root, "dev") // a fresh tmpfs: no symlinks in it yet
	if privileged {
		if err := copyDevices(dev); err != nil {
			return err
		}
	} else {
		for _, name := range unprivilegedDevices {
			src := filepath.Join("/dev", name)
			if _, err := os.Stat(src); err != nil {
				continue // the node lacks it
			}
			dst := filepath.Join(dev, name)
			if err := os.WriteFile(dst, nil, 0o666); err != nil {
				return fmt.Errorf("create /dev/%s: %w", name, err)
			}
			if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind /dev/%s: %w", name, err)
			}
		}
	}
	for name, to := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
	} {
		if err := os.Symlink(to, filepath.Join(dev, name)); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create /dev/%s: %w", name, err)
		}
	}
	if err := mountFS(root, "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return err
	}
	return mountFS(root, "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k")
}

// copyDevices recreates the node's device nodes (and their directories)
// under dev, as runtimes do for privileged containers; mount points under
// the node's /dev (pts, shm, mqueue, hugepages…) are left out.
func copyDevices(dev string) error {
	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	skip := map[string]bool{"/dev/ptmx": true}
	for _, m := range mounts {
		if m.Point != "/dev" && mountinfo.Under(m.Point, "/dev") {
			skip[m.Point] = true
		}
	}
	return filepath.WalkDir("/dev", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "/dev" {
			return nil // vanished while walking: skip it
		}
		if skip[p] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(dev, strings.TrimPrefix(p, "/dev/"))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if d.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return nil
		}
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("create device %s: %w", p, err)
		}
		if err := unix.Chown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("chown device %s: %w", p, err)
		}
		return nil
	})
}

// bindInto bind-mounts m into root with its propagation and read-only
// setting; unprivileged containers cannot use device nodes in it.
func bindInto(root string, m Mount, privileged bool) error {
	st, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("mount source for %s: %w", m.Target, err)
	}
	dst, err := target(root, m.Target, st.IsDir())
	if err != nil {
		return err
	}
	if err := unix.Mount(m.Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s on %s: %w", m.Source, m.Target, err)
	}
	switch m.Propagation {
	case PropagationShared:
		// Peers of the node's mount already (isolate left the source
		// shared).
	case PropagationSlave:
		if err := unix.Mount("", dst, "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
			return fmt.Errorf("make %s rslave: %w", m.Target, err)
		}
	default:
		if err := unix.Mount("", dst, "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s rprivate: %w", m.Target, err)
		}
	}
	if m.ReadOnly {
		if err := setAttr(dst, false, unix.MOUNT_ATTR_RDONLY); err != nil {
			return fmt.Errorf("make %s read-only: %w", m.Target, err)
		}
	}
	if !privileged {
		if err := setAttr(dst, true, unix.MOUNT_ATTR_NODEV); err != nil {
			return fmt.Errorf("make %s nodev: %w", m.Target, err)
		}
	}
	return nil
}

func setAttr(path string, recursive bool, attr uint64) error {
	var flags uint
	if recursive {
		flags = unix.AT_RECURSIVE
	}
	return unix.MountSetattr(unix.AT_FDCWD, path, flags, &unix.MountAttr{Attr_set: attr})
}

// restrictPaths masks and write-protects what unprivileged containers must
// not touch in /proc and /sys.
func restrictPaths(root string) error {
	for _, p := range maskedPaths {
		dst := filepath.Join(root, p) // inside fresh proc/sysfs: no symlinks to follow
		st, err := os.Stat(dst)
		if err != nil {
			continue
		}
		if st.IsDir() {
			err = unix.Mount("tmpfs", dst, "tmpfs", unix.MS_RDONLY, "")
		} else {
			err = unix.Mount("/dev/null", dst, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	for _, p := range readOnlyPaths {
		dst := filepath.Join(root, p)
		if _, err := os.Stat(dst); err != nil {
			continue
		}
		if err := unix.Mount(dst, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", p, err)
		}
		if err := setAttr(dst, true, unix.MOUNT_ATTR_RDONLY); err != nil {
			return fmt.Errorf("make %s read-only: %w", p, err)
		}
	}
	return nil
}

// pivot makes root the container's root. The old root is made a recursive
// slave first, so detaching it unmounts nothing on the node.
func pivot(root string) error {
	oldRoot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the old root: %w", err)
	}
	defer unix.Close(oldRoot)
	if err := os.Chdir(root); err != nil {
		return fmt.Errorf("enter the new root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// The old root is now stacked on the new one (pivot_root(".", "."),
	// no put_old directory needed). Work on it through its own fd: "."
	// still names the new root.
	if err := unix.Fchdir(oldRoot); err != nil {
		return fmt.Errorf("enter the old root: %w", err)
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make the old root rslave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}
