package podinit

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// capNames are the Linux capabilities by number, named as in
// securityContext.capabilities (without the CAP_ prefix).
var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// DefaultCapabilities is the capability set container runtimes (containerd,
// CRI-O, Docker) give an unprivileged container.
var DefaultCapabilities = []string{
	"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
	"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
}

const allCaps = "ALL"

// parseCaps maps capability names ("NET_ADMIN", "CAP_NET_ADMIN", "ALL") to
// numbers; ALL is -1.
func parseCaps(names []string) ([]int, error) {
	var out []int
	for _, n := range names {
		u := strings.TrimPrefix(strings.ToUpper(n), "CAP_")
		if u == allCaps {
			out = append(out, -1)
			continue
		}
		found := false
		for i, c := range capNames {
			if c == u {
				out = append(out, i)
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown capability %q (known: %s, ALL)", n, strings.Join(capNames, ", "))
		}
	}
	return out, nil
}

// CapabilitySet returns the capabilities an unprivileged container keeps:
// the default set, with add and drop applied as containerd does (ALL in add,
// then ALL in drop, then the named adds, then the named drops).
func CapabilitySet(add, drop []string) (map[int]bool, error) {
	a, err := parseCaps(add)
	if err != nil {
		return nil, err
	}
	d, err := parseCaps(drop)
	if err != nil {
		return nil, err
	}
	set := map[int]bool{}
	def, _ := parseCaps(DefaultCapabilities)
	for _, c := range def {
		set[c] = true
	}
	for _, c := range a {
		if c < 0 {
			for i := range capNames {
				set[i] = true
			}
		}
	}
	for _, c := range d {
		if c < 0 {
			clear(set)
		}
	}
	for _, c := range a {
		if c >= 0 {
			set[c] = true
		}
	}
	for _, c := range d {
		if c >= 0 {
			delete(set, c)
		}
	}
	return set, nil
}

func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read cap_last_cap: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// setCredentials gives the calling thread (the one that execs) the
// container's capabilities and user. An unprivileged container keeps its
// set in the bounding set, and, running as root, in its effective and
// permitted sets (inheritable and ambient stay empty, so root's exec keeps
// exactly that set); a container running as another user loses them all
// at exec, as in any runtime.
func setCredentials(o Options) error {
	var set map[int]bool
	if !o.Privileged {
		var err error
		if set, err = CapabilitySet(o.CapAdd, o.CapDrop); err != nil {
			return err
		}
		last, err := lastCap()
		if err != nil {
			return err
		}
		for c := 0; c <= last; c++ {
			if set[c] {
				continue
			}
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
			}
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
			return fmt.Errorf("clear ambient capabilities: %w", err)
		}
	}
	// The user last but for the capability sets: changing it needs
	// CAP_SETUID and CAP_SETGID, which the container may have dropped.
	if o.GID != nil || o.UID != nil || len(o.Groups) > 0 {
		if err := unix.Setgroups(o.Groups); err != nil {
			return fmt.Errorf("set supplementary groups %v: %w", o.Groups, err)
		}
	}
	if o.GID != nil {
		if err := unix.Setresgid(*o.GID, *o.GID, *o.GID); err != nil {
			return fmt.Errorf("set group %d: %w", *o.GID, err)
		}
	}
	if o.UID != nil && *o.UID != 0 {
		if err := unix.Setresuid(*o.UID, *o.UID, *o.UID); err != nil {
			return fmt.Errorf("set user %d: %w", *o.UID, err)
		}
		return nil // the kernel cleared the effective and permitted sets
	}
	if o.Privileged {
		return nil
	}
	var data [2]unix.CapUserData
	for c := range set {
		data[c/32].Effective |= 1 << (uint(c) % 32)
		data[c/32].Permitted |= 1 << (uint(c) % 32)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("set capabilities: %w", err)
	}
	return nil
}
