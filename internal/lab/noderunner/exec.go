package noderunner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	utilexec "k8s.io/utils/exec"
)

// outputDrainTimeout bounds how long output is still copied after an exec'd
// command exited (a background child may hold its output open).
const outputDrainTimeout = 2 * time.Second

// firstSizeTimeout bounds how long a terminal exec waits for the client's
// terminal size before it starts the command.
const firstSizeTimeout = time.Second

// hostRuntime runs exec and attach for containers that are processes on
// this machine.
type hostRuntime struct{}

// containerNamespaces are the namespaces an exec'd command joins, with
// nsenter's option for each; only those the container does not share with
// the runner are entered.
var containerNamespaces = []struct{ kind, flag string }{
	{"mnt", "--mount"}, {"uts", "--uts"}, {"ipc", "--ipc"}, {"net", "--net"}, {"pid", "--pid"}, {"cgroup", "--cgroup"},
}

// nsenterExecArgs returns nsenter's arguments to run argv inside the
// namespaces, root and working directory of process pid. (A Go program
// cannot enter a mount namespace from a multi-threaded process itself;
// nsenter does it before it execs the command.)
func nsenterExecArgs(pid int, argv []string) ([]string, error) {
	args := []string{"--target", strconv.Itoa(pid)}
	for _, ns := range containerNamespaces {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns.kind))
		if err != nil {
			return nil, fmt.Errorf("read %s namespace of container process %d: %w", ns.kind, pid, err)
		}
		if own, err := os.Readlink("/proc/self/ns/" + ns.kind); err == nil && own == target {
			continue
		}
		args = append(args, ns.flag)
	}
	args = append(args, "--root", "--wd", "--")
	return append(args, argv...), nil
}

// defaultPath is the PATH of a container whose environment has none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// processEnviron returns the environment process pid started with; an
// exec'd command gets the container's environment, as a runtime gives it.
// It is never nil (a nil Env would hand over the runner's own).
func processEnviron(pid int) ([]string, error) {
	var b []byte
	// A process in the middle of an execve shows an empty environment
	// for a moment: look again before believing it.
	for try := 0; try < 5; try++ {
		var err error
		if b, err = os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err != nil {
			return nil, fmt.Errorf("read environment of container process %d: %w", pid, err)
		}
		if len(b) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	env := []string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if len(kv) > 0 {
			env = append(env, string(kv))
		}
	}
	if !hasEnv(env, "PATH") {
		env = append(env, defaultPath)
	}
	return env, nil
}

// Exec runs argv in the container: its namespaces, root, working
// directory, environment and cgroup. A non-zero exit is returned as a
// utilexec.CodeExitError, which the streaming server reports as the exit
// code.
func (hostRuntime) Exec(ctx context.Context, t execTarget, argv []string, s ioStreams) error {
	if len(argv) == 0 {
		return errors.New("no command given")
	}
	pid := t.Container.PID
	args, err := nsenterExecArgs(pid, argv)
	if err != nil {
		return err
	}
	env, err := processEnviron(pid)
	if err != nil {
		return err
	}
	if s.TTY && !hasEnv(env, "TERM") {
		env = append(env, "TERM=xterm")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return fmt.Errorf("exec needs nsenter (util-linux): %w", err)
	}
	cmd := exec.Command(nsenter, args...)
	cmd.Env = env
	cmd.Dir = "/"
	// A session of its own: a terminal's session, and a process group
	// to kill when the client goes away.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if t.State != nil && t.State.CgroupDir != "" {
		cg, err := os.Open(t.State.CgroupDir)
		if err != nil {
			return fmt.Errorf("open pod cgroup: %w", err)
		}
		defer cg.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	}
	if s.TTY {
		return runTerminal(ctx, cmd, s, fmt.Sprintf("/proc/%d/root/dev/ptmx", pid))
	}
	return runPiped(ctx, cmd, s)
}

// Attach connects to the container's log shim.
func (hostRuntime) Attach(ctx context.Context, t execTarget, s ioStreams) error {
	return attachShim(ctx, AttachSocketPath(t.State.Dir, t.Container.Name), s)
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// killGroupOnCancel kills the command's process group when ctx ends (the
// client hung up).
func killGroupOnCancel(ctx context.Context, cmd *exec.Cmd) func() bool {
	pid := cmd.Process.Pid
	return context.AfterFunc(ctx, func() { syscall.Kill(-pid, syscall.SIGKILL) })
}

func exitResult(cmd *exec.Cmd, werr error) error {
	if cmd.ProcessState == nil {
		return werr
	}
	code := exitStatus(cmd.ProcessState, werr)
	if code == 0 {
		return nil
	}
	return utilexec.CodeExitError{Err: fmt.Errorf("command exited with code %d", code), Code: code}
}

func runPiped(ctx context.Context, cmd *exec.Cmd, s ioStreams) error {
	var childEnds, readers []*os.File
	var stdinW *os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	if s.In != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		cmd.Stdin, stdinW = r, w
		childEnds = append(childEnds, r)
	}
	type copyTo struct {
		r   *os.File
		dst io.Writer
	}
	var copies []copyTo
	for _, o := range []struct {
		dst io.Writer
		set func(*os.File)
	}{
		{s.Out, func(f *os.File) { cmd.Stdout = f }},
		{s.Err, func(f *os.File) { cmd.Stderr = f }},
	} {
		if o.dst == nil {
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(childEnds)
			closeAll(readers)
			return err
		}
		o.set(w)
		childEnds = append(childEnds, w)
		readers = append(readers, r)
		copies = append(copies, copyTo{r, o.dst})
	}
	if err := cmd.Start(); err != nil {
		closeAll(childEnds)
		closeAll(readers)
		if stdinW != nil {
			stdinW.Close()
		}
		return fmt.Errorf("start nsenter: %w", err)
	}
	closeAll(childEnds)
	defer killGroupOnCancel(ctx, cmd)()
	if stdinW != nil {
		go func() {
			io.Copy(stdinW, s.In)
			stdinW.Close()
		}()
	}
	var wg sync.WaitGroup
	for _, c := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(c.dst, c.r)
		}()
	}
	werr := cmd.Wait()
	for _, r := range readers {
		r.SetReadDeadline(time.Now().Add(outputDrainTimeout))
	}
	wg.Wait()
	closeAll(readers)
	if stdinW != nil {
		stdinW.Close()
	}
	return exitResult(cmd, werr)
}

func runTerminal(ctx context.Context, cmd *exec.Cmd, s ioStreams, ptmx string) error {
	master, slave, err := openPTY(ptmx)
	if err != nil {
		return err
	}
	defer master.Close()
	if s.Resize != nil {
		// The client sends its size first thing; start the command in
		// a terminal of that size rather than resize it under it.
		select {
		case sz, ok := <-s.Resize:
			if ok {
				setWinsize(master, sz.Width, sz.Height)
			}
		case <-time.After(firstSizeTimeout):
		case <-ctx.Done():
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr.Setctty = true // Ctty 0: its stdin
	err = cmd.Start()
	slave.Close()
	if err != nil {
		return fmt.Errorf("start nsenter: %w", err)
	}
	defer killGroupOnCancel(ctx, cmd)()
	if s.Resize != nil {
		go func() {
			for sz := range s.Resize {
				setWinsize(master, sz.Width, sz.Height)
			}
		}()
	}
	if s.In != nil {
		go io.Copy(master, s.In)
	}
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		if s.Out != nil {
			io.Copy(s.Out, master) // ends with EIO once the terminal's last user left
			return
		}
		io.Copy(io.Discard, master)
	}()
	werr := cmd.Wait()
	master.SetReadDeadline(time.Now().Add(outputDrainTimeout))
	<-outDone
	return exitResult(cmd, werr)
}
