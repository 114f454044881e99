package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/sys/unix"
)

// kubectlPods are the pods TestKubectl works with (busybox runs the host's
// programs in the lab).
const kubectlPods = `
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  containers:
  - name: ticker
    image: busybox
    env: [{name: GREETING, value: hello from ticker}]
    command: ["sh", "-c", "echo started; echo to stderr >&2; sleep 1; i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - name: crasher
    image: busybox
    command: ["sh", "-c", "echo run-$(cat /proc/sys/kernel/random/uuid); sleep 2; exit 3"]
`

// counterPod prints five lines a few seconds after it started, then
// exits.
const counterPod = `
apiVersion: v1
kind: Pod
metadata: {name: counter}
spec:
  restartPolicy: Never
  containers:
  - name: counter
    image: busybox
    command: ["sh", "-c", "sleep 4; for i in 1 2 3 4 5; do echo line $i; sleep 0.5; done"]
`

// kubectl runs kubectl against the lab and returns its combined output and
// exit code (-1: it did not run or was killed).
func (l *Lab) kubectl(timeout time.Duration, stdin string, args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", l.kc}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return string(out), ee.ExitCode()
	}
	return string(out) + err.Error(), -1
}

// TestKubectl drives kubectl exec, logs, attach and run -it against lab pods
// through the API server, which proxies them to the node runner's kubelet
// API.
func TestKubectl(t *testing.T) {
	l := upLab(t, 1)
	apply := func(manifest string) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "pods.yaml")
		if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		l.Kubectl("apply", "-f", f)
	}
	apply(kubectlPods)
	l.Kubectl("wait", "--for=condition=Ready", "pod/ticker", "--timeout=120s")

	t.Run("exec", func(t *testing.T) {
		if out, code := l.kubectl(30*time.Second, "", "exec", "ticker", "--", "hostname"); code != 0 || out != "ticker\n" {
			t.Errorf("exec hostname: %q, exit %d", out, code)
		}
		if out, code := l.kubectl(30*time.Second, "", "exec", "ticker", "--", "sh", "-c", `echo "$GREETING"`); code != 0 || out != "hello from ticker\n" {
			t.Errorf("exec sees the container's environment: %q, exit %d", out, code)
		}
		out, code := l.kubectl(30*time.Second, "", "exec", "ticker", "--", "sh", "-c", "echo partial; exit 5")
		if code != 5 || !strings.Contains(out, "partial") || !strings.Contains(out, "command terminated with exit code 5") {
			t.Errorf("exec exit code: %q, exit %d", out, code)
		}
		if out, code := l.kubectl(30*time.Second, "piped line\n", "exec", "-i", "ticker", "--", "cat"); code != 0 || out != "piped line\n" {
			t.Errorf("exec -i: %q, exit %d", out, code)
		}
		if out, code := l.kubectl(30*time.Second, "", "exec", "ticker", "-c", "nope", "--", "true"); code == 0 || !strings.Contains(out, "nope") {
			t.Errorf("exec in an unknown container: %q, exit %d", out, code)
		}
	})

	t.Run("exec -it", func(t *testing.T) {
		p := startInTerminal(t, 40, 120, "kubectl", "--kubeconfig", l.kc, "exec", "-it", "ticker", "--",
			"sh", "-c", `tty; stty size; read x; echo "got-$x"; exit 3`)
		p.waitFor(t, "40 120", 30*time.Second)
		p.write(t, "hello\r")
		p.waitFor(t, "got-hello", 10*time.Second)
		if code := p.wait(t, 30*time.Second); code != 3 {
			t.Errorf("kubectl exec -it exit code %d, want 3; output %q", code, p.output())
		}
		if !strings.Contains(p.output(), "/dev/pts/") {
			t.Errorf("no terminal in the container: %q", p.output())
		}
	})

	t.Run("logs", func(t *testing.T) {
		out := l.Kubectl("logs", "ticker")
		if !strings.HasPrefix(out, "started\nto stderr\ntick 0\n") && !strings.HasPrefix(out, "to stderr\nstarted\ntick 0\n") {
			t.Errorf("logs: %q", out)
		}
		if out := l.Kubectl("logs", "ticker", "--tail=2"); len(strings.Split(strings.TrimSpace(out), "\n")) != 2 || !strings.HasPrefix(out, "tick ") {
			t.Errorf("logs --tail=2: %q", out)
		}
		out = l.Kubectl("logs", "ticker", "--timestamps", "--tail=1")
		if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z tick \d+\n$`).MatchString(out) {
			t.Errorf("logs --timestamps: %q", out)
		}
		ts, _, _ := strings.Cut(out, " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(at) > time.Minute || time.Since(at) < -time.Minute {
			t.Errorf("log timestamp %q is not the time of the line: %v", ts, err)
		}
		if out := l.Kubectl("logs", "ticker", "--since=1h"); !strings.Contains(out, "started") {
			t.Errorf("logs --since=1h lacks the first line: %q", out)
		}
		time.Sleep(3 * time.Second)
		if out := l.Kubectl("logs", "ticker", "--since=2s"); strings.Contains(out, "started") || !strings.Contains(out, "tick") {
			t.Errorf("logs --since=2s: %q", out)
		}
		if out := l.Kubectl("logs", "ticker", "--limit-bytes=5"); out != "start" && out != "to st" {
			t.Errorf("logs --limit-bytes=5: %q", out)
		}
		if out, code := l.kubectl(30*time.Second, "", "logs", "ticker", "--previous"); code == 0 || !strings.Contains(out, `previous terminated container "ticker" in pod "ticker" not found`) {
			t.Errorf("logs --previous of a container that never restarted: %q, exit %d", out, code)
		}
	})

	t.Run("logs -f", func(t *testing.T) {
		// counter prints five lines after 4s, then exits: -f follows
		// until then and ends by itself.
		apply(counterPod)
		l.Kubectl("wait", "--for=condition=Ready", "pod/counter", "--timeout=60s")
		start := time.Now()
		out, code := l.kubectl(60*time.Second, "", "logs", "-f", "counter")
		if code != 0 || out != "line 1\nline 2\nline 3\nline 4\nline 5\n" {
			t.Errorf("logs -f: %q, exit %d", out, code)
		}
		if d := time.Since(start); d < 2*time.Second {
			t.Errorf("logs -f returned after %s: it did not follow", d)
		}
	})

	t.Run("logs --previous", func(t *testing.T) {
		var pod *corev1.Pod
		eventually(t, 90*time.Second, "crasher restarted and running again", func() error {
			var err error
			pod, err = l.cs.CoreV1().Pods("default").Get(context.Background(), "crasher", metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, s := range pod.Status.ContainerStatuses {
				if s.RestartCount >= 1 && s.State.Running != nil {
					return nil
				}
			}
			return fmt.Errorf("statuses %+v", pod.Status.ContainerStatuses)
		})
		prev := l.Kubectl("logs", "crasher", "--previous")
		cur := l.Kubectl("logs", "crasher")
		runLine := regexp.MustCompile(`^run-[0-9a-f-]{36}\n$`)
		if !runLine.MatchString(prev) || !runLine.MatchString(cur) || prev == cur {
			t.Errorf("previous log %q and current log %q: want one run line each, different", prev, cur)
		}
	})

	t.Run("attach", func(t *testing.T) {
		// Output only: attach shows what ticker prints from now on.
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "kubectl", "--kubeconfig", l.kc, "attach", "ticker").CombinedOutput()
		if !regexp.MustCompile(`tick \d+\n`).Match(out) || strings.Contains(string(out), "started") {
			t.Errorf("attach output %q: want new ticks only", out)
		}
	})

	t.Run("run -it", func(t *testing.T) {
		p := startInTerminal(t, 30, 100, "kubectl", "--kubeconfig", l.kc, "run", "-it", "--image", "curlimages/curl", "curler", "--", "/bin/sh")
		// kubectl attaches once the pod runs; the shell's first prompt
		// came before, so this is where a person presses enter.
		p.waitFor(t, "If you don't see a command prompt, try pressing enter.", 120*time.Second)
		p.write(t, "\r")
		p.write(t, "echo hi-$((6*7)); stty size\r")
		p.waitFor(t, "hi-42", 20*time.Second)
		p.waitFor(t, "30 100", 10*time.Second)
		p.write(t, "exit\r")
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Errorf("kubectl run -it exit code %d; output %q", code, p.output())
		}
		if !strings.Contains(p.output(), "Session ended") {
			t.Errorf("kubectl run -it output %q", p.output())
		}
	})
}

// terminalProc is a program running with a pseudo-terminal as its
// controlling terminal, as a person's shell would run it.
type terminalProc struct {
	cmd    *exec.Cmd
	master *os.File
	mu     sync.Mutex
	out    strings.Builder
	done   chan struct{}
}

func startInTerminal(t *testing.T, rows, cols uint16, name string, args ...string) *terminalProc {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(m, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
	s, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		t.Fatal(errno)
	}
	master, slave := os.NewFile(uintptr(m), "ptmx"), os.NewFile(s, "pts")
	p := &terminalProc{cmd: exec.Command(name, args...), master: master, done: make(chan struct{})}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = slave, slave, slave
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		master.Close()
	})
	return p
}

func (p *terminalProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *terminalProc) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.output(), s) {
		select {
		case <-p.done:
			time.Sleep(100 * time.Millisecond) // the last output
			if strings.Contains(p.output(), s) {
				return
			}
			t.Fatalf("program exited before printing %q; output %q", s, p.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q after %s; output %q", s, timeout, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *terminalProc) write(t *testing.T, s string) {
	t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// wait returns the program's exit code.
func (p *terminalProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("program did not exit within %s; output %q", timeout, p.output())
		return -1
	}
}
