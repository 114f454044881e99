// Package podinit is the first program of every lab container
// (`glia lab _pod-init`). The node runner starts it in fresh mount and UTS
// namespaces inside the pod's network namespace; it makes every mount
// private (so nothing it mounts propagates back to the host), bind-mounts the
// pod's resolv.conf, hosts and hostname files over /etc/resolv.conf,
// /etc/hosts and /etc/hostname, sets the hostname and then execs the
// container's program, which keeps its PID.
//
// It refuses to touch mounts or the hostname unless it runs in mount and UTS
// namespaces of its own (different from its parent's), so running it by hand
// cannot change the host.
package podinit

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Options are _pod-init's flags.
type Options struct {
	Hostname string
	// ResolvConf, Hosts and HostnameFile are files bind-mounted over
	// /etc/resolv.conf, /etc/hosts and /etc/hostname when set.
	ResolvConf   string
	Hosts        string
	HostnameFile string
	// CgroupProcs is a cgroup.procs file to join before exec, for runtimes
	// that cannot start the process in its cgroup.
	CgroupProcs string
	// Dir is the working directory of the program.
	Dir string
	// Argv is the program and its arguments.
	Argv []string
}

// Args renders o as _pod-init's command line (without the command name).
func (o Options) Args() []string {
	var a []string
	add := func(flag, v string) {
		if v != "" {
			a = append(a, "--"+flag, v)
		}
	}
	add("hostname", o.Hostname)
	add("resolv", o.ResolvConf)
	add("hosts", o.Hosts)
	add("hostname-file", o.HostnameFile)
	add("cgroup-procs", o.CgroupProcs)
	add("dir", o.Dir)
	a = append(a, "--")
	return append(a, o.Argv...)
}

// Parse parses _pod-init's command line.
func Parse(args []string) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("_pod-init", flag.ContinueOnError)
	fs.StringVar(&o.Hostname, "hostname", "", "hostname of the pod")
	fs.StringVar(&o.ResolvConf, "resolv", "", "file to bind-mount over /etc/resolv.conf")
	fs.StringVar(&o.Hosts, "hosts", "", "file to bind-mount over /etc/hosts")
	fs.StringVar(&o.HostnameFile, "hostname-file", "", "file to bind-mount over /etc/hostname")
	fs.StringVar(&o.CgroupProcs, "cgroup-procs", "", "cgroup.procs file to join before exec")
	fs.StringVar(&o.Dir, "dir", "", "working directory of the program")
	if err := fs.Parse(args); err != nil {
		return Options{}, fmt.Errorf("parse _pod-init flags: %w", err)
	}
	o.Argv = fs.Args()
	if len(o.Argv) == 0 {
		return Options{}, errors.New("_pod-init: no program given after --")
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
	if err := ownNamespace("mnt"); err != nil {
		return err
	}
	if err := ownNamespace("uts"); err != nil {
		return err
	}
	// First of all: nothing mounted below may propagate to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	for _, m := range []struct{ src, dst string }{
		{o.ResolvConf, "/etc/resolv.conf"},
		{o.Hosts, "/etc/hosts"},
		{o.HostnameFile, "/etc/hostname"},
	} {
		if m.src == "" {
			continue
		}
		if err := bindFile(m.src, m.dst); err != nil {
			return err
		}
	}
	if o.Hostname != "" {
		if err := unix.Sethostname([]byte(o.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", o.Hostname, err)
		}
	}
	if o.CgroupProcs != "" {
		if err := os.WriteFile(o.CgroupProcs, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	if o.Dir != "" {
		if err := os.Chdir(o.Dir); err != nil {
			return fmt.Errorf("chdir: %w", err)
		}
	}
	path, err := exec.LookPath(o.Argv[0])
	if err != nil {
		return fmt.Errorf("find program: %w", err)
	}
	if err := syscall.Exec(path, o.Argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}

// ownNamespace fails unless this process's namespace of kind differs from its
// parent's.
func ownNamespace(kind string) error {
	self, err := os.Readlink("/proc/self/ns/" + kind)
	if err != nil {
		return fmt.Errorf("read own %s namespace: %w", kind, err)
	}
	parent, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", os.Getppid(), kind))
	if err != nil {
		return fmt.Errorf("read parent's %s namespace: %w", kind, err)
	}
	if self == parent {
		return fmt.Errorf("refusing to run: _pod-init must be started in a new %s namespace (it shares %s with its parent)", kind, self)
	}
	return nil
}

// bindFile bind-mounts src over dst. dst must exist: creating it would
// change the host's filesystem.
func bindFile(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s over %s: %w", src, dst, err)
	}
	return nil
}
