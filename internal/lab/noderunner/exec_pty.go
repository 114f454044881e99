package noderunner

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openPTY opens a new pseudo-terminal. The master is non-blocking (so reads
// can be given deadlines); the slave is opened from the master
// (TIOCGPTPEER), not by a /dev/pts path, which may differ between mount
// namespaces.
//
// ptmx is the multiplexer to open: a container's own (/proc/PID/root/dev/ptmx,
// its devpts instance) so the terminal has a name inside it, as a runtime's
// exec gives.
func openPTY(ptmx string) (master, slave *os.File, err error) {
	m, err := unix.Open(ptmx, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", ptmx, err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	s, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		unix.Close(m)
		return nil, nil, fmt.Errorf("open pty slave: %w", errno)
	}
	n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	name := "pts"
	if err == nil {
		name = fmt.Sprintf("/dev/pts/%d", n)
	}
	return os.NewFile(uintptr(m), "/dev/ptmx"), os.NewFile(s, name), nil
}
