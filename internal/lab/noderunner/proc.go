package noderunner

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/procutil"
)

// Process is one running container process.
type Process interface {
	PID() int
	// StartTime is the process start time in clock ticks since boot.
	StartTime() uint64
	// Done is closed when the process has exited.
	Done() <-chan struct{}
	// ExitCode is the exit status once Done is closed: the exit code, or
	// 128+signal, or -1 when unknown (an adopted process).
	ExitCode() int
	Signal(sig syscall.Signal) error
}

func procStartTime(pid int) (uint64, error) { return procutil.StartTime(pid) }

func processAlive(pid int, startTime uint64) bool { return procutil.Alive(pid, startTime) }

// childProcess is a process this runner started.
type childProcess struct {
	cmd       *exec.Cmd
	startTime uint64
	done      chan struct{}
	exitCode  int
}

func newChildProcess(cmd *exec.Cmd) *childProcess {
	p := &childProcess{cmd: cmd, done: make(chan struct{}), exitCode: -1}
	p.startTime, _ = procStartTime(cmd.Process.Pid)
	go func() {
		err := cmd.Wait()
		p.exitCode = exitStatus(cmd.ProcessState, err)
		close(p.done)
	}()
	return p
}

func exitStatus(ps *os.ProcessState, err error) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func (p *childProcess) PID() int              { return p.cmd.Process.Pid }
func (p *childProcess) StartTime() uint64     { return p.startTime }
func (p *childProcess) Done() <-chan struct{} { return p.done }
func (p *childProcess) ExitCode() int {
	<-p.done
	return p.exitCode
}

func (p *childProcess) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %d: %w", p.PID(), err)
	}
	return nil
}

// adoptedProcess is a process started by an earlier runner; it is not our
// child, so it is watched through a pidfd.
type adoptedProcess struct {
	pid       int
	startTime uint64
	fd        int
	done      chan struct{}
	closeOnce sync.Once
}

// adoptProcess re-attaches pid if it still runs and started at startTime.
func adoptProcess(pid int, startTime uint64) (Process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("open pidfd of %d: %w", pid, err)
	}
	// Check identity after opening the pidfd: the fd pins the process.
	if !processAlive(pid, startTime) {
		unix.Close(fd)
		return nil, fmt.Errorf("process %d is gone or its pid was reused", pid)
	}
	p := &adoptedProcess{pid: pid, startTime: startTime, fd: fd, done: make(chan struct{})}
	go p.watch()
	return p, nil
}

func (p *adoptedProcess) watch() {
	defer close(p.done)
	defer unix.Close(p.fd)
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n > 0 {
			return
		}
	}
}

func (p *adoptedProcess) PID() int              { return p.pid }
func (p *adoptedProcess) StartTime() uint64     { return p.startTime }
func (p *adoptedProcess) Done() <-chan struct{} { return p.done }
func (p *adoptedProcess) ExitCode() int         { <-p.done; return -1 }

func (p *adoptedProcess) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := unix.Kill(p.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %d: %w", p.pid, err)
	}
	return nil
}
