package noderunner

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"glia.dev/glia/internal/lab/podinit"
)

// testContainer is a real container process started through Spawn (log
// shim, pod network namespace, cgroup, _pod-init).
type testContainer struct {
	proc   *childProcess
	target execTarget
	log    string
}

func spawnTestContainer(t *testing.T, name string, cio ContainerIO, argv ...string) *testContainer {
	t.Helper()
	podNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		podNS.Close()
		testutils.UnmountNS(podNS)
	})
	cgroup := testCgroup(t)
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if cio.LogPath == "" {
		cio.LogPath = filepath.Join(dir, name+".log")
	}
	if cio.AttachSocket == "" {
		cio.AttachSocket = AttachSocketPath(dir, name)
	}
	cmd, err := Spawn(SpawnSpec{
		SelfExe:   self,
		NetNSPath: podNS.Path(),
		CgroupDir: cgroup,
		Init:      podinit.Options{Scratch: scratchDir(t, dir), Hostname: "web-7f9c", Argv: argv},
		Env:       []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello from the container"},
		IO:        cio,
	})
	if err != nil {
		t.Fatal(err)
	}
	proc := newChildProcess(cmd)
	t.Cleanup(func() {
		proc.Signal(syscall.SIGKILL)
		<-proc.Done()
	})
	return &testContainer{
		proc: proc,
		log:  cio.LogPath,
		target: execTarget{
			Pod:       &corev1.Pod{},
			State:     &PodState{CgroupDir: cgroup, Dir: dir},
			Container: ContainerState{Name: name, PID: proc.PID(), StartTime: proc.StartTime()},
		},
	}
}

// waitLog waits until the container's log holds want.
func (c *testContainer) waitLog(t *testing.T, want string) {
	t.Helper()
	eventually(t, "log line "+want, func() (bool, error) {
		b, err := logText(c.log)
		return bytes.Contains(b, []byte(want)), err
	})
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee utilexec.CodeExitError
	if !errors.As(err, &ee) {
		t.Fatalf("exec error %v (%T) carries no exit code", err, err)
	}
	return ee.Code
}

func TestPrivilegedExecInContainer(t *testing.T) {
	requireRoot(t)
	c := spawnTestContainer(t, "web", ContainerIO{}, "sh", "-c", "echo started; echo to stderr >&2; exec sleep 1000")
	c.waitLog(t, "started")
	ctx := t.Context()
	rt := hostRuntime{}

	t.Run("stdin, stdout, stderr and exit code", func(t *testing.T) {
		var out, errOut bytes.Buffer
		err := rt.Exec(ctx, c.target, []string{"sh", "-c", `hostname; echo "$GREETING"; cat; echo oops >&2; exit 7`},
			ioStreams{In: strings.NewReader("typed input\n"), Out: &out, Err: &errOut})
		if code := exitCode(t, err); code != 7 {
			t.Errorf("exit code %d, want 7", code)
		}
		if want := "web-7f9c\nhello from the container\ntyped input\n"; out.String() != want {
			t.Errorf("stdout %q, want %q", out.String(), want)
		}
		if errOut.String() != "oops\n" {
			t.Errorf("stderr %q", errOut.String())
		}
	})

	t.Run("in the container's namespaces and cgroup", func(t *testing.T) {
		var out bytes.Buffer
		err := rt.Exec(ctx, c.target, []string{"sh", "-c", "readlink /proc/self/ns/net /proc/self/ns/uts /proc/self/ns/mnt; cat /proc/self/cgroup"}, ioStreams{Out: &out})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, kind := range []string{"net", "uts", "mnt"} {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", c.target.Container.PID, kind))
			if err != nil {
				t.Fatal(err)
			}
			own, _ := os.Readlink("/proc/self/ns/" + kind)
			if l == own {
				t.Fatalf("the container shares the test's %s namespace", kind)
			}
			want = append(want, l)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) < 4 || strings.Join(lines[:3], " ") != strings.Join(want, " ") {
			t.Errorf("exec ran in namespaces %q, want the container's %q", lines, want)
		}
		if cg := c.target.State.CgroupDir; cg != "" && !strings.HasSuffix(strings.TrimSpace(lines[len(lines)-1]), filepath.Base(cg)) {
			t.Errorf("exec ran in cgroup %q, want %s", lines[len(lines)-1], cg)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		inR, inW := io.Pipe()
		resize := make(chan remotecommand.TerminalSize, 2)
		resize <- remotecommand.TerminalSize{Width: 100, Height: 30}
		out := &lockedBuffer{}
		done := make(chan error, 1)
		go func() {
			done <- rt.Exec(ctx, c.target, []string{"sh", "-c", `tty; stty size; read x; echo "got-$x"; read y; stty size; exit 3`},
				ioStreams{In: inR, Out: out, TTY: true, Resize: resize})
		}()
		eventually(t, "terminal size", func() (bool, error) { return strings.Contains(out.String(), "30 100"), nil })
		io.WriteString(inW, "hello\n")
		eventually(t, "echoed line", func() (bool, error) { return strings.Contains(out.String(), "got-hello"), nil })
		// A resize reaches the running command.
		resize <- remotecommand.TerminalSize{Width: 132, Height: 50}
		time.Sleep(200 * time.Millisecond)
		io.WriteString(inW, "\n")
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("terminal exec did not end; output so far %q", out.String())
		}
		if code := exitCode(t, err); code != 3 {
			t.Errorf("exit code %d, want 3 (output %q)", code, out.String())
		}
		s := out.String()
		if !strings.Contains(s, "/dev/pts/") || !strings.Contains(s, "50 132") {
			t.Errorf("terminal output %q lacks the tty name or the new size", s)
		}
		if !strings.Contains(s, "\r\n") {
			t.Errorf("terminal output %q has no CRLF line ends", s)
		}
	})

	t.Run("missing program", func(t *testing.T) {
		var out, errOut bytes.Buffer
		err := rt.Exec(ctx, c.target, []string{"no-such-program"}, ioStreams{Out: &out, Err: &errOut})
		if code := exitCode(t, err); code != 127 {
			t.Errorf("exit code %d, want 127; stderr %q", code, errOut.String())
		}
	})

	// The log shim wrote both streams in the CRI format (in the order
	// it read them: the two pipes race).
	b, err := os.ReadFile(c.log)
	if err != nil {
		t.Fatal(err)
	}
	entries := parseAll(t, b)
	want := []logged{{"stdout", false, "started"}, {"stderr", false, "to stderr"}}
	if len(entries) == 2 && entries[0].stream == "stderr" {
		entries[0], entries[1] = entries[1], entries[0]
	}
	if diff := cmp.Diff(want, entries, cmp.AllowUnexported(logged{})); diff != "" {
		t.Errorf("log entries (-want +got):\n%s", diff)
	}
}

// TestPrivilegedAttachTerminal runs a shell with stdin and a terminal, as
// `kubectl run -it` creates it, and attaches to it.
func TestPrivilegedAttachTerminal(t *testing.T) {
	requireRoot(t)
	c := spawnTestContainer(t, "shell", ContainerIO{Stdin: true, StdinOnce: true, TTY: true}, "sh")
	// The shell prints its prompt before anyone attaches; the log has it
	// only once a line ends, so wait for the shim instead.
	time.Sleep(300 * time.Millisecond)
	inR, inW := io.Pipe()
	resize := make(chan remotecommand.TerminalSize, 1)
	resize <- remotecommand.TerminalSize{Width: 90, Height: 20}
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- hostRuntime{}.Attach(t.Context(), c.target, ioStreams{In: inR, Out: out, TTY: true, Resize: resize})
	}()
	io.WriteString(inW, "echo attached-$((6*7)); stty size\n")
	eventually(t, "shell output", func() (bool, error) {
		s := out.String()
		return strings.Contains(s, "attached-42") && strings.Contains(s, "20 90"), nil
	})
	io.WriteString(inW, "exit 4\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("attach did not end when the shell exited; output %q", out.String())
	}
	<-c.proc.Done()
	if code := c.proc.ExitCode(); code != 4 {
		t.Errorf("shell exit code %d, want 4", code)
	}
	// The session is in the log (as stdout: a terminal has one stream).
	c.waitLog(t, "attached-42")
	if _, err := os.Stat(c.target.State.Dir + "/attach-shell.sock"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("attach socket left behind: %v", err)
	}
}

// TestPrivilegedAttachStdinOnce: a container reading stdin without a
// terminal gets EOF when the first attached client ends its input.
func TestPrivilegedAttachStdinOnce(t *testing.T) {
	requireRoot(t)
	c := spawnTestContainer(t, "reader", ContainerIO{Stdin: true, StdinOnce: true}, "sh", "-c", "cat; echo cat-done >&2")
	out, errOut := &lockedBuffer{}, &lockedBuffer{}
	// A second client attached only for output sees it too.
	watcherOut := &lockedBuffer{}
	watcherDone := make(chan error, 1)
	go func() {
		watcherDone <- hostRuntime{}.Attach(t.Context(), c.target, ioStreams{Out: watcherOut, Err: io.Discard})
	}()
	time.Sleep(200 * time.Millisecond)
	err := hostRuntime{}.Attach(t.Context(), c.target, ioStreams{In: strings.NewReader("line one\nline two\n"), Out: out, Err: errOut})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "line one\nline two\n" || errOut.String() != "cat-done\n" {
		t.Errorf("attach got stdout %q stderr %q", out.String(), errOut.String())
	}
	if err := <-watcherDone; err != nil || watcherOut.String() != "line one\nline two\n" {
		t.Errorf("watcher got %q, %v", watcherOut.String(), err)
	}
	<-c.proc.Done()
	// Per stream: the shim reads the two pipes independently.
	for _, s := range []struct {
		opts logReadOptions
		want string
	}{{logReadOptions{Stdout: true}, "line one\nline two\n"}, {logReadOptions{Stderr: true}, "cat-done\n"}} {
		var b bytes.Buffer
		if err := readLog(t.Context(), c.log, s.opts, &b); err != nil || b.String() != s.want {
			t.Errorf("log %q, %v; want %q", b.String(), err, s.want)
		}
	}
}

// TestPrivilegedLogRotation: a restart keeps the run before as the previous
// log; a first run removes old logs; following ends when the container does.
func TestPrivilegedLogRotation(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "c.log")
	os.WriteFile(logPath, []byte("stale\n"), 0o600)
	os.WriteFile(PreviousLogPath(logPath), []byte("stale\n"), 0o600)
	first := spawnTestContainer(t, "c", ContainerIO{LogPath: logPath}, "sh", "-c", "echo first run; sleep 1; echo first end")
	var followed bytes.Buffer
	start := time.Now()
	err := readLog(t.Context(), logPath, logReadOptions{Stdout: true, Stderr: true, Follow: true,
		Running: func() bool { return processAlive(first.proc.PID(), first.proc.StartTime()) }}, &followed)
	if err != nil || followed.String() != "first run\nfirst end\n" {
		t.Errorf("followed %q, %v", followed.String(), err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("following took %s after the container ended", d)
	}
	if _, err := os.Stat(PreviousLogPath(logPath)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a first run kept an old previous log: %v", err)
	}
	<-first.proc.Done()

	second := spawnTestContainer(t, "c", ContainerIO{LogPath: logPath, Restart: true}, "sh", "-c", "echo second run")
	<-second.proc.Done()
	second.waitLog(t, "second run")
	if b, _ := logText(logPath); string(b) != "second run\n" {
		t.Errorf("current log %q", b)
	}
	if b, _ := logText(PreviousLogPath(logPath)); string(b) != "first run\nfirst end\n" {
		t.Errorf("previous log %q", b)
	}
}
