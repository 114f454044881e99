package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/procutil"
)

// Proc is a lab process: what was started, where, and how to recognise it
// again (its PID and its start time, so a reused PID is never signalled).
type Proc struct {
	Name      string   `json:"name"`
	PID       int      `json:"pid"`
	StartTime uint64   `json:"startTime"`
	Args      []string `json:"args"`
	Netns     string   `json:"netns,omitempty"`
	Cgroup    string   `json:"cgroup,omitempty"`
	Log       string   `json:"log"`
}

func procStartTime(pid int) (uint64, error) { return procutil.StartTime(pid) }

// Alive reports whether the recorded process is still the one we started
// (a zombie counts as gone).
func (p Proc) Alive() bool { return p.StartTime != 0 && procutil.Alive(p.PID, p.StartTime) }

// Signal sends sig to the process if it is still the one we started.
func (p Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return nil
	}
	return syscall.Kill(p.PID, sig)
}

// Stop asks the process to end, waits up to grace, then kills it.
func (p Proc) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !p.Alive() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p.Signal(syscall.SIGKILL)
}

// WaitGone waits until the process has ended.
func (p Proc) WaitGone(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for p.Alive() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) still running after %s", p.Name, p.PID, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// closeInheritedFDs marks every descriptor above stderr close-on-exec, so
// lab daemons inherit nothing from whoever started `glia lab` (a lock file
// held by flock(1), a test harness's pipes).
// It runs before every spawn: descriptors are few and it is cheap.
func closeInheritedFDs() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// spawn starts a daemon: its own session, stdin from /dev/null, output
// appended to logPath, placed in cgroupDir (created if needed) and born in
// the named network namespace netnsName ("" = the caller's).
func spawn(name, netnsName, cgroupDir, logPath string, args []string, env []string) (Proc, error) {
	return spawnIn(name, netnsName, 0, cgroupDir, logPath, args, env)
}

// spawnIn is spawn with clone flags for new namespaces of the child (e.g.
// CLONE_NEWNS: a mount namespace of its own).
func spawnIn(name, netnsName string, cloneflags uintptr, cgroupDir, logPath string, args []string, env []string) (Proc, error) {
	closeInheritedFDs()
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return Proc{}, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return Proc{}, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s starting %s: %s\n", time.Now().UTC().Format(time.RFC3339), name, strings.Join(args, " "))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	attr := &syscall.SysProcAttr{Setsid: true, Cloneflags: cloneflags}
	if cgroupDir != "" {
		if err := os.MkdirAll(cgroupDir, 0o755); err != nil {
			return Proc{}, fmt.Errorf("cgroup %s: %w", cgroupDir, err)
		}
		fd, err := unix.Open(cgroupDir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return Proc{}, fmt.Errorf("open cgroup %s: %w", cgroupDir, err)
		}
		defer unix.Close(fd)
		attr.UseCgroupFD, attr.CgroupFD = true, fd
	}
	cmd.SysProcAttr = attr
	start := cmd.Start
	if netnsName != "" {
		start = func() error { return inNetns(netnsName, cmd.Start) }
	}
	if err := start(); err != nil {
		return Proc{}, fmt.Errorf("start %s: %w", name, err)
	}
	go cmd.Wait() // reap it if it dies while we are still running
	st, err := procStartTime(cmd.Process.Pid)
	if err != nil {
		return Proc{}, fmt.Errorf("%s exited at once: see %s", name, logPath)
	}
	return Proc{Name: name, PID: cmd.Process.Pid, StartTime: st, Args: args, Netns: netnsName, Cgroup: cgroupDir, Log: logPath}, nil
}

// killCgroupTree kills every process in the cgroup tree at dir (cgroup v2
// cgroup.kill) and removes the directories, leaves first.
func killCgroupTree(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 100; try++ { // the kernel empties a killed cgroup asynchronously
			if err = unix.Rmdir(dirs[i]); err == nil || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// cgroupV2Root finds the cgroup v2 hierarchy: /sys/fs/cgroup/unified on a
// hybrid layout, /sys/fs/cgroup on a unified one.
func cgroupV2Root() (string, error) {
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup: the lab needs cgroup v2 to track its processes")
}
