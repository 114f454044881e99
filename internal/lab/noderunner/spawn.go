package noderunner

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"

	"glia.dev/glia/internal/lab/podinit"
)

// SpawnSpec describes one container process.
type SpawnSpec struct {
	// SelfExe is the glia binary; the process starts as
	// `SelfExe lab _pod-init INIT-FLAGS -- PROGRAM ARGS...`.
	SelfExe string
	// NetNSPath is the pod's network namespace; empty runs the process in
	// the runner's own (host network pods).
	NetNSPath string
	// CgroupDir is the cgroup v2 directory the process is born in; empty
	// leaves it in the runner's cgroup.
	CgroupDir string
	Init      podinit.Options
	Env       []string
	// IO connects stdin, stdout and stderr through the container's log
	// shim (`SelfExe lab _log-shim`).
	IO ContainerIO
}

// Spawn starts a container process: in new mount and UTS namespaces, inside
// the pod's network namespace and cgroup from its first instruction, in a
// session of its own so it survives the runner. Its output goes to a log
// shim started first (see ContainerIO); with a TTY, a terminal is its
// controlling terminal.
func Spawn(spec SpawnSpec) (*exec.Cmd, error) {
	stdio, err := startLogShim(spec.SelfExe, spec.IO, spec.CgroupDir)
	if err != nil {
		return nil, err
	}
	defer stdio.Close() // the child holds its own copies
	started := false
	defer func() { stdio.finishRotation(started) }()

	cmd := exec.Command(spec.SelfExe, append([]string{"lab", "_pod-init"}, spec.Init.Args()...)...)
	cmd.Env = spec.Env
	cmd.Dir = "/"
	cmd.Stdin = stdio.stdin
	cmd.Stdout = stdio.stdout
	cmd.Stderr = stdio.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		Setsid:     true,
		Setctty:    stdio.tty, // Ctty 0: the terminal is its stdin
	}
	if spec.CgroupDir != "" {
		cg, err := os.Open(spec.CgroupDir)
		if err != nil {
			return nil, fmt.Errorf("open pod cgroup: %w", err)
		}
		defer cg.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	}
	start := cmd.Start
	if spec.NetNSPath != "" {
		start = func() error {
			// ns.Do runs on a locked thread switched into the pod's
			// namespace; the child is cloned from that thread.
			return ns.WithNetNSPath(spec.NetNSPath, func(ns.NetNS) error { return cmd.Start() })
		}
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("start container process: %w", err)
	}
	started = true
	return cmd, nil
}
