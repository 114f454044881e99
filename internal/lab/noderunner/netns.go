package noderunner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetNSPrefix starts the name of every pod network namespace the runner
// creates under NetNSDir, so `ip netns` shows them and the lab's cleanup
// finds them all.
const NetNSPrefix = "glia-pod-"

// NetNSDir is where named network namespaces live (as with `ip netns`).
const NetNSDir = "/var/run/netns"

// PodNetNSName is the deterministic namespace name of a pod on a node:
// glia-pod-<node>-<first 8 characters of the pod UID>.
func PodNetNSName(node, uid string) string {
	short := strings.ReplaceAll(uid, "-", "")
	if len(short) > 8 {
		short = short[:8]
	}
	return NetNSPrefix + node + "-" + short
}

// createNetNS creates a network namespace bind-mounted at dir/name, as
// `ip netns add` does. An existing namespace at that path is reused.
func createNetNS(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	if isNetNSMount(path) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	// Make the directory a shared mount point so the namespace mounts are
	// seen by processes in other mount namespaces (what `ip netns` does).
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		if !errors.Is(err, unix.EINVAL) {
			return "", fmt.Errorf("make %s shared: %w", dir, err)
		}
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return "", fmt.Errorf("bind %s onto itself: %w", dir, err)
		}
		if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
			return "", fmt.Errorf("make %s shared: %w", dir, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create netns mount point: %w", err)
	}
	if f != nil {
		f.Close()
	}
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked, so the runtime discards it (or, for
		// the main thread, parks it) when the goroutine ends; it is moved
		// back to its original namespace anyway, because a parked main
		// thread decides what /proc/self/ns/net shows.
		runtime.LockOSThread()
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		orig, err := os.Open(self)
		if err != nil {
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		defer unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET)
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mount netns to %s: %w", path, err)
			return
		}
		// A container runtime brings the sandbox's loopback up (pods talk
		// to themselves over it); so does the runner.
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			errc <- fmt.Errorf("bring up lo in %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return "", err
	}
	return path, nil
}

// isNetNSMount reports whether path is a bind-mounted network namespace.
func isNetNSMount(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// removeNetNS unmounts and removes a namespace made by createNetNS. A
// missing namespace is not an error.
func removeNetNS(path string) error {
	if path == "" {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
