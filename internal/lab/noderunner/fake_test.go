package noderunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"glia.dev/glia/internal/lab/podinit"
)

// fakeProc is a container process that lives until signalled or told to exit.
type fakeProc struct {
	pid     int
	start   uint64
	done    chan struct{}
	once    sync.Once
	code    int
	mu      sync.Mutex
	signals []syscall.Signal
	init    podinit.Options
	env     []string
	// ignoreTERM makes the process survive SIGTERM.
	ignoreTERM bool
}

func (p *fakeProc) exit(code int) {
	p.once.Do(func() {
		p.code = code
		close(p.done)
	})
}

func (p *fakeProc) PID() int              { return p.pid }
func (p *fakeProc) StartTime() uint64     { return p.start }
func (p *fakeProc) Done() <-chan struct{} { return p.done }
func (p *fakeProc) ExitCode() int         { <-p.done; return p.code }
func (p *fakeProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	p.signals = append(p.signals, sig)
	ignore := p.ignoreTERM && sig == syscall.SIGTERM
	p.mu.Unlock()
	if !ignore {
		p.exit(128 + int(sig))
	}
	return nil
}

func (p *fakeProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// fakeSandbox records what the runner asks of the kernel.
type fakeSandbox struct {
	mu       sync.Mutex
	nextIP   int
	nextPID  int
	calls    []string // "prepare uid", "teardown uid", "check uid", "adopt uid name"
	procs    map[int]*fakeProc
	byPod    map[string][]*fakeProc
	prepErr  error
	ignoreTE bool
	// exec answers Exec (exec probes); nil fails every exec.
	exec func(pid int, argv []string) error
}

func newFakeSandbox() *fakeSandbox {
	return &fakeSandbox{nextIP: 10, nextPID: 1000, procs: map[int]*fakeProc{}, byPod: map[string][]*fakeProc{}}
}

func (f *fakeSandbox) record(s string) {
	f.calls = append(f.calls, s)
}

func (f *fakeSandbox) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeSandbox) Prepare(_ context.Context, st *PodState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("prepare " + st.UID)
	if f.prepErr != nil {
		return f.prepErr
	}
	if !st.HostNetwork {
		st.NetNSPath = "/var/run/netns/" + PodNetNSName("n1", st.UID)
		st.PodIPs = []string{fmt.Sprintf("198.19.1.%d", f.nextIP)}
		st.CNIResult = []byte(`{"cniVersion":"1.1.0"}`)
		f.nextIP++
	}
	return nil
}

func (f *fakeSandbox) Check(_ context.Context, st *PodState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("check " + st.UID)
	return nil
}

func (f *fakeSandbox) Start(_ context.Context, st *PodState, init podinit.Options, env []string, _ ContainerIO) (Process, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextPID++
	p := &fakeProc{pid: f.nextPID, start: uint64(f.nextPID * 7), done: make(chan struct{}), init: init, env: env, ignoreTERM: f.ignoreTE}
	f.procs[p.pid] = p
	f.byPod[st.UID] = append(f.byPod[st.UID], p)
	return p, nil
}

func (f *fakeSandbox) Adopt(st *PodState, c ContainerState) (Process, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("adopt " + st.UID + " " + c.Name)
	p := f.procs[c.PID]
	if p == nil || !p.running() || p.start != c.StartTime {
		return nil, errors.New("gone")
	}
	return p, nil
}

func (f *fakeSandbox) Signal(st *PodState, sig syscall.Signal) error {
	f.mu.Lock()
	procs := slices.Clone(f.byPod[st.UID])
	f.mu.Unlock()
	for _, p := range procs {
		p.Signal(sig)
	}
	return nil
}

func (f *fakeSandbox) Teardown(_ context.Context, st *PodState) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("teardown " + st.UID)
	return nil
}

func (f *fakeSandbox) Exec(_ context.Context, pid int, argv []string) ([]byte, error) {
	f.mu.Lock()
	exec := f.exec
	f.mu.Unlock()
	if exec == nil {
		return nil, errors.New("no exec in the fake sandbox")
	}
	return nil, exec(pid, argv)
}

func (f *fakeSandbox) setExec(fn func(pid int, argv []string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exec = fn
}

func (f *fakeSandbox) podProcs(uid string) []*fakeProc {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.byPod[uid])
}

// testRunner runs a runner against client and sb until the test ends or
// stop is called.
type testRunner struct {
	r    *runner
	stop func()
	done chan error
}

func startRunner(t *testing.T, client kubernetes.Interface, sb Sandbox, stateDir string) *testRunner {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Node = "n1"
	cfg.NodeIP = "198.18.0.11"
	cfg.StateDir = stateDir
	cfg.CNIConfDir = "/nonexistent"
	cfg.CNIBinDir = "/nonexistent"
	cfg.ClusterDNS = "198.18.128.10"
	cfg.SelfExe = "/usr/local/bin/glia"
	cfg.StatusInterval = time.Hour
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	r, err := newRunner(log, cfg, client, sb, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.tick = 5 * time.Millisecond
	r.maxGrace = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	tr := &testRunner{r: r, done: make(chan error, 1)}
	go func() { tr.done <- r.run(ctx) }()
	var once sync.Once
	tr.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-tr.done; err != nil {
				t.Errorf("runner: %v", err)
			}
		})
	}
	t.Cleanup(tr.stop)
	return tr
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// eventually polls cond until it holds; the deadline only keeps a broken
// test from hanging.
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 60*time.Second, true,
		func(context.Context) (bool, error) { return cond() })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func getPod(t *testing.T, c kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := c.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
