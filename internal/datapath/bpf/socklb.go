package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// soNetnsCookie is SO_NETNS_COOKIE (Linux 5.14+), which x/sys lacks.
const soNetnsCookie = 71

// netnsCookie returns the cookie of the calling thread's network
// namespace, as bpf_get_netns_cookie reports it for its sockets.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: socket: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetnsCookie)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: SO_NETNS_COOKIE: %w", err)
	}
	return c, nil
}

// cgroupID returns the id of the cgroup v2 directory path (its inode).
func cgroupID(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("cgroup %s: not a cgroup v2 directory", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

func sockPinName(prog string) string { return prog + "-cgroup" }

// attachSocketLB attaches the socket programs to the cgroup at path as
// pinned links (other programs of the cgroup keep running: links are
// multi-attach), replacing in place those a previous run attached there,
// and detaching those it attached to another cgroup.
func (d *Datapath) attachSocketLB(path string) error {
	id, err := cgroupID(path)
	if err != nil {
		return err
	}
	for _, sp := range sockProgs {
		prog := d.objs.Sock[sp.name]
		pin := filepath.Join(d.linksDir, sockPinName(sp.name))
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			info, ierr := l.Info()
			if ierr == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == id {
				err := l.Update(prog)
				l.Close()
				if err != nil {
					return fmt.Errorf("replace %s on cgroup %s: %w", sp.name, path, err)
				}
				continue
			}
			d.log.Info("moving socket load balancing to another cgroup", "program", sp.name, "cgroup", path)
			l.Unpin()
			l.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open pinned link %s: %w", sockPinName(sp.name), err)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: sp.attach, Program: prog})
		if err != nil {
			return fmt.Errorf("attach %s to cgroup %s: %w", sp.name, path, err)
		}
		err = l.Pin(pin)
		l.Close()
		if err != nil {
			return fmt.Errorf("pin link %s: %w", sockPinName(sp.name), err)
		}
	}
	return nil
}

// detachSocketLB removes the socket programs a previous run attached; a
// missing attachment is fine.
func (d *Datapath) detachSocketLB() error {
	var errs []error
	for _, sp := range sockProgs {
		pin := filepath.Join(d.linksDir, sockPinName(sp.name))
		l, err := link.LoadPinnedLink(pin, nil)
		switch {
		case err == nil:
			d.log.Info("detaching socket load balancing", "program", sp.name)
			errs = append(errs, l.Unpin(), l.Close())
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, fmt.Errorf("open pinned link %s: %w", sockPinName(sp.name), err))
		}
	}
	return errors.Join(errs...)
}
