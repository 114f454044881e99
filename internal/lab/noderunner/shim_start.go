package noderunner

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// ContainerIO says where a container's standard streams go.
type ContainerIO struct {
	// LogPath receives stdout and stderr in the CRI log format.
	LogPath string
	// Restart keeps the log of the run before as the previous log
	// (PreviousLogPath); otherwise, on a container's first run in its pod,
	// older logs at LogPath (an earlier pod of the same name) are removed.
	Restart bool
	// Stdin, StdinOnce and TTY are the container's spec fields.
	Stdin, StdinOnce, TTY bool
	// AttachSocket is where the log shim serves attach.
	AttachSocket string
}

// containerStdio are the container's ends of the streams a log shim holds
// the other ends of.
type containerStdio struct {
	stdin, stdout, stderr *os.File
	tty                   bool
	files                 []*os.File
	logPath               string
	rotated               bool
}

// finishRotation settles a rotation once the container started, or undoes
// it when the container did not start after all, so a failed restart does
// not push the last real run out of the previous log.
func (c *containerStdio) finishRotation(started bool) {
	if !c.rotated {
		return
	}
	c.rotated = false
	prev := PreviousLogPath(c.logPath)
	if started {
		os.Remove(olderLogPath(c.logPath))
		return
	}
	os.Rename(prev, c.logPath)
	os.Rename(olderLogPath(c.logPath), prev)
}

// Close closes the runner's copies of the container's ends (after the
// container started with its own).
func (c *containerStdio) Close() error {
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// olderLogPath holds the previous log while a restart is under way.
func olderLogPath(logPath string) string { return PreviousLogPath(logPath) + ".older" }

// shimStartTimeout bounds how long a log shim may take to get ready.
const shimStartTimeout = 10 * time.Second

// rotateLog prepares path for a new run: the run before becomes the
// previous log (the one before that is kept aside until finishRotation), or
// (a first run) old logs are removed. It reports whether it rotated.
func rotateLog(path string, restart bool) (bool, error) {
	prev, older := PreviousLogPath(path), olderLogPath(path)
	if !restart {
		for _, p := range []string{path, prev, older} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return false, fmt.Errorf("remove old container log: %w", err)
			}
		}
		return false, nil
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err := os.Rename(prev, older); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("keep previous container log: %w", err)
	}
	if err := os.Rename(path, prev); err != nil {
		os.Rename(older, prev)
		return false, fmt.Errorf("keep previous container log: %w", err)
	}
	return true, nil
}

// startLogShim starts the log shim of one container run (`SELF lab
// _log-shim`, in a session of its own and in cgroupDir when set) and waits
// until it writes the log and serves attach. It returns the ends of the
// streams the container gets.
func startLogShim(selfExe string, cio ContainerIO, cgroupDir string) (_ *containerStdio, err error) {
	if cio.LogPath == "" || cio.AttachSocket == "" {
		return nil, errors.New("container IO needs a log path and an attach socket")
	}
	rotated, err := rotateLog(cio.LogPath, cio.Restart)
	if err != nil {
		return nil, err
	}
	stdio := &containerStdio{tty: cio.TTY, logPath: cio.LogPath, rotated: rotated}
	var shimFiles []*os.File // the shim's ends: ExtraFiles, fd 3 onwards
	defer func() {
		for _, f := range shimFiles {
			f.Close()
		}
		if err != nil {
			stdio.Close()
			stdio.finishRotation(false)
		}
	}()
	pipe := func() (*os.File, *os.File, error) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("create container pipe: %w", err)
		}
		return r, w, nil
	}
	opts := ShimOptions{LogPath: cio.LogPath, AttachSocket: cio.AttachSocket, TTY: cio.TTY, StdinOnce: cio.StdinOnce}
	nextFD := func(f *os.File) int {
		shimFiles = append(shimFiles, f)
		return 2 + len(shimFiles)
	}
	if cio.TTY {
		master, slave, err := openPTY("/dev/ptmx")
		if err != nil {
			return nil, err
		}
		stdio.files = append(stdio.files, slave)
		stdio.stdin, stdio.stdout, stdio.stderr = slave, slave, slave
		opts.OutFD = nextFD(master)
	} else {
		outR, outW, err := pipe()
		if err != nil {
			return nil, err
		}
		stdio.files = append(stdio.files, outW)
		opts.OutFD = nextFD(outR)
		errR, errW, err := pipe()
		if err != nil {
			return nil, err
		}
		stdio.files = append(stdio.files, errW)
		opts.ErrFD = nextFD(errR)
		stdio.stdout, stdio.stderr = outW, errW
		if cio.Stdin {
			inR, inW, err := pipe()
			if err != nil {
				return nil, err
			}
			stdio.files = append(stdio.files, inR)
			opts.InFD = nextFD(inW)
			stdio.stdin = inR
		} else {
			devnull, err := os.Open(os.DevNull)
			if err != nil {
				return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
			}
			stdio.files = append(stdio.files, devnull)
			stdio.stdin = devnull
		}
	}
	readyR, readyW, err := pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	opts.ReadyFD = nextFD(readyW)

	cmd := exec.Command(selfExe, append([]string{"lab", "_log-shim"}, opts.Args()...)...)
	cmd.Dir = "/"
	cmd.Env = []string{}
	// Its own failures are worth a line in the runner's log.
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = shimFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cgroupDir != "" {
		cg, err := os.Open(cgroupDir)
		if err != nil {
			return nil, fmt.Errorf("open pod cgroup: %w", err)
		}
		defer cg.Close()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cg.Fd())
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start log shim: %w", err)
	}
	go cmd.Wait() // reap it, should it end while this runner runs
	for _, f := range shimFiles {
		f.Close()
	}
	shimFiles = nil

	readyR.SetReadDeadline(time.Now().Add(shimStartTimeout))
	msg, rerr := io.ReadAll(readyR)
	if !bytes.Equal(msg, []byte{1}) {
		cmd.Process.Kill()
		switch {
		case len(msg) > 0:
			return nil, fmt.Errorf("log shim: %s", msg)
		case rerr != nil:
			return nil, fmt.Errorf("log shim did not get ready within %s: %w", shimStartTimeout, rerr)
		default:
			return nil, errors.New("log shim exited before it was ready (its error is in the runner's log)")
		}
	}
	return stdio, nil
}
