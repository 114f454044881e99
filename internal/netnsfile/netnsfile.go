// Package netnsfile keeps network namespaces alive as files, the way
// `ip netns add` does: a new namespace bind-mounted on a file, in a
// directory made a shared mount point so that the mounts show in every
// mount namespace. The lab (node namespaces), the node runner (pod
// namespaces) and the agent's health endpoint all keep theirs this way.
package netnsfile

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Dir is where named network namespaces live, for `ip netns` and glia.
const Dir = "/var/run/netns"

// Create makes a new network namespace bound on path, with its loopback
// up (pods and nodes talk to themselves over it). The directory must
// exist; ShareDir prepares one. On error nothing is left at path.
func Create(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace file %s: %w", path, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread enters the new namespace and is never unlocked: when
		// the goroutine returns, the runtime ends the thread rather than
		// hand it, in the wrong namespace, to another goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mount the namespace on %s: %w", path, err)
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			unix.Unmount(path, unix.MNT_DETACH)
			errc <- fmt.Errorf("bring up lo in %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// IsNamespace reports whether path is a bound network namespace (or any
// namespace file).
func IsNamespace(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// Remove unmounts and deletes the namespace file at path; a missing one
// is not an error. A file can carry more than one mount (one per bind of
// its directory over it): all are taken off.
func Remove(path string) error {
	for range 8 {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// ShareDir makes dir (created if missing) a shared mount point, bound
// onto itself if it is not a mount point yet, as `ip netns add` does.
// Call it before binding namespaces in dir: binding the directory over
// namespace files already mounted in it would stack a second mount on
// each.
func ShareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !IsMountPoint(dir) {
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", dir, err)
		}
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// IsMountPoint reports whether path is a mount point (listed in this
// process's mountinfo).
func IsMountPoint(path string) bool {
	if r, err := filepath.EvalSymlinks(path); err == nil {
		path = r
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == path {
			return true
		}
	}
	return false
}
