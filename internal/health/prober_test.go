package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"glia.dev/glia/internal/api"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

type fakeRecorder struct {
	mu        sync.Mutex
	rtt       map[string]bool // "node/target/probe" → ok
	reachable map[string]bool
	forgotten []string
}

func newFakeRecorder() *fakeRecorder {
	return &fakeRecorder{rtt: map[string]bool{}, reachable: map[string]bool{}}
}

func (r *fakeRecorder) ObserveRTT(node, target, probe string, rtt time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok && rtt <= 0 {
		panic(fmt.Sprintf("successful probe %s/%s/%s with rtt %v", node, target, probe, rtt))
	}
	r.rtt[node+"/"+target+"/"+probe] = ok
}

func (r *fakeRecorder) SetReachable(node string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reachable[node] = ok
}

func (r *fakeRecorder) ForgetNode(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forgotten = append(r.forgotten, node)
	delete(r.reachable, node)
	for k := range r.rtt {
		if len(k) > len(node) && k[:len(node)+1] == node+"/" {
			delete(r.rtt, k)
		}
	}
}

// fakePing answers from a table and tracks how many pings run at once.
type fakePing struct {
	results  map[netip.Addr]error
	inflight atomic.Int32
	maxSeen  atomic.Int32
}

func (f *fakePing) ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	runtime.Gosched()
	err, known := f.results[dst]
	if !known {
		return 0, context.DeadlineExceeded
	}
	if err != nil {
		return 0, err
	}
	return 42 * time.Microsecond, nil
}

// helloServer serves /hello on 127.0.0.1 and returns its port.
func helloServer(t *testing.T, node string) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, HelloHandler(node)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

func TestProberRound(t *testing.T) {
	port := helloServer(t, "node-a")
	a := netip.MustParseAddr
	fp := &fakePing{results: map[netip.Addr]error{
		a("127.0.0.1"): nil,
		a("127.0.0.2"): nil,
		a("127.0.0.3"): fmt.Errorf("%w: host unreachable (from 127.0.0.1)", errUnreachable),
	}}
	targets := []Target{
		{Node: "a", HostIP: a("127.0.0.1"), EndpointIP: a("127.0.0.1"), Local: true},
		{Node: "b", HostIP: a("127.0.0.1"), EndpointIP: a("127.0.0.2")}, // nobody serves 127.0.0.2
		{Node: "c", HostIP: a("127.0.0.3")},                             // no pod CIDR yet
		{Node: "a", HostIP: a("127.0.0.9")},                             // duplicate: ignored
		{Node: "", HostIP: a("127.0.0.9")},                              // no name: ignored
	}
	var mu sync.Mutex
	rec := newFakeRecorder()
	p, err := NewProber(testLogger(t), ProberConfig{
		NodeName: "a", Port: port, BaseInterval: time.Millisecond, Workers: 2, Recorder: rec,
	}, func() []Target { mu.Lock(); defer mu.Unlock(); return targets })
	if err != nil {
		t.Fatal(err)
	}
	p.ping = fp.ping

	if got := p.Report(); !got.ProbeTime.IsZero() || len(got.Nodes) != 0 {
		t.Fatalf("report before the first round = %+v, want zero", got)
	}
	if got := p.Status(); got != nil {
		t.Fatalf("status before the first round = %+v, want nil", got)
	}
	before := time.Now().UTC()
	rep := p.ProbeOnce(context.Background())
	if rep.ProbeTime.Before(before.Add(-time.Second)) || rep.ProbeTime.Location() != time.UTC {
		t.Errorf("probe time %v, want about %v in UTC", rep.ProbeTime, before)
	}
	if diff := cmp.Diff(rep, p.Report(), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("Report() differs from the round's report:\n%s", diff)
	}
	for _, n := range rep.Nodes {
		for _, pa := range []*PathStatus{&n.Host, n.Endpoint} {
			if pa == nil {
				continue
			}
			for _, r := range []ProbeResult{pa.ICMP, pa.HTTP} {
				if r.OK != (r.RTT > 0) {
					t.Errorf("%s %s: ok=%v with rtt %v", n.Name, pa.Addr, r.OK, r.RTT)
				}
			}
		}
	}
	okRes := ProbeResult{OK: true}
	want := Report{
		ProbeTime: rep.ProbeTime,
		Interval:  150 * time.Millisecond, // 3 nodes × 50ms > 1ms
		Nodes: []NodeStatus{
			{
				Name: "a", Local: true,
				Host:     PathStatus{Addr: a("127.0.0.1"), ICMP: okRes, HTTP: okRes},
				Endpoint: &PathStatus{Addr: a("127.0.0.1"), ICMP: okRes, HTTP: okRes},
			},
			{
				Name:     "b",
				Host:     PathStatus{Addr: a("127.0.0.1"), ICMP: okRes, HTTP: okRes},
				Endpoint: &PathStatus{Addr: a("127.0.0.2"), ICMP: okRes, HTTP: ProbeResult{Err: "connection refused"}},
			},
			{
				Name: "c",
				Host: PathStatus{Addr: a("127.0.0.3"), ICMP: ProbeResult{Err: "host unreachable (from 127.0.0.1)"}, HTTP: ProbeResult{Err: "connection refused"}},
			},
		},
	}
	opts := cmp.Options{
		cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmpopts.IgnoreFields(ProbeResult{}, "RTT"),
	}
	if diff := cmp.Diff(want, rep, opts); diff != "" {
		t.Errorf("round (-want +got):\n%s", diff)
	}
	if got := p.Interval(); got != 150*time.Millisecond {
		t.Errorf("Interval() = %v, want 150ms", got)
	}
	if m := fp.maxSeen.Load(); m > 2 {
		t.Errorf("%d pings in flight, want at most 2 workers", m)
	}
	wantSummary := &api.ClusterHealthStatus{Reachable: 1, Total: 3, ProbeTime: rep.ProbeTime, Unreachable: []string{"b", "c"}}
	if diff := cmp.Diff(wantSummary, p.Status()); diff != "" {
		t.Errorf("Status() (-want +got):\n%s", diff)
	}
	rec.mu.Lock()
	if diff := cmp.Diff(map[string]bool{"a": true, "b": false, "c": false}, rec.reachable); diff != "" {
		t.Errorf("recorded reachability (-want +got):\n%s", diff)
	}
	wantRTT := map[string]bool{
		"a/host/icmp": true, "a/host/http": true, "a/endpoint/icmp": true, "a/endpoint/http": true,
		"b/host/icmp": true, "b/host/http": true, "b/endpoint/icmp": true, "b/endpoint/http": false,
		"c/host/icmp": false, "c/host/http": false,
	}
	if diff := cmp.Diff(wantRTT, rec.rtt); diff != "" {
		t.Errorf("recorded probes (-want +got):\n%s", diff)
	}
	rec.mu.Unlock()

	// Node c leaves: its series go, the interval shrinks back.
	mu.Lock()
	targets = targets[:2]
	mu.Unlock()
	p.ProbeOnce(context.Background())
	rec.mu.Lock()
	if diff := cmp.Diff([]string{"c"}, rec.forgotten); diff != "" {
		t.Errorf("forgotten nodes (-want +got):\n%s", diff)
	}
	if _, ok := rec.reachable["c"]; ok {
		t.Error("node c still has a reachability series")
	}
	rec.mu.Unlock()
	if got := p.Interval(); got != 100*time.Millisecond {
		t.Errorf("Interval() = %v, want 100ms", got)
	}

	// A round cut short is not recorded.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	last := p.Report()
	p.ProbeOnce(ctx)
	if got := p.Report(); !got.ProbeTime.Equal(last.ProbeTime) {
		t.Errorf("a canceled round replaced the report (%v → %v)", last.ProbeTime, got.ProbeTime)
	}
}

func TestProberRunAndTrigger(t *testing.T) {
	calls := make(chan struct{}, 10)
	p, err := NewProber(testLogger(t), ProberConfig{NodeName: "a", Port: 1, BaseInterval: time.Hour},
		func() []Target { calls <- struct{}{}; return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-calls // the first round starts at once
	p.Trigger()
	<-calls // the second only because of Trigger: the interval is an hour
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	if got := p.Report().Summary(); got.Total != 0 || got.ProbeTime.IsZero() {
		t.Errorf("summary after rounds without targets = %+v", got)
	}
}

func TestProberConfigValidate(t *testing.T) {
	tests := []struct {
		cfg     ProberConfig
		wantErr bool
	}{
		{ProberConfig{NodeName: "a"}, false},
		{ProberConfig{}, true},
		{ProberConfig{NodeName: "a", Port: 70000}, true},
		{ProberConfig{NodeName: "a", Timeout: -1}, true},
		{ProberConfig{NodeName: "a", Workers: -1}, true},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
			t.Errorf("Validate(%+v) = %v, want error %v", tt.cfg, err, tt.wantErr)
		}
	}
	d := ProberConfig{NodeName: "a"}.withDefaults()
	want := ProberConfig{NodeName: "a", Port: 4240, BaseInterval: 10 * time.Second, Timeout: 3 * time.Second, Workers: 8}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestDescribe(t *testing.T) {
	refused := &url.Error{Op: "Get", URL: "http://198.19.1.1:4240/hello", Err: &net.OpError{
		Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED),
	}}
	tests := []struct {
		err  error
		want string
	}{
		{context.DeadlineExceeded, "timeout after 3s"},
		{fmt.Errorf("wait for echo reply: %w", os.ErrDeadlineExceeded), "timeout after 3s"},
		{refused, "connection refused"},
		{fmt.Errorf("send: %w", syscall.EHOSTUNREACH), "no route to host"},
		{fmt.Errorf("%w: host unreachable (from 198.18.0.1)", errUnreachable), "host unreachable (from 198.18.0.1)"},
		{context.Canceled, "canceled"},
		{&url.Error{Op: "Get", URL: "u", Err: errors.New("malformed HTTP response")}, "malformed HTTP response"},
		{errors.New("something else"), "something else"},
	}
	for _, tt := range tests {
		if got := describe(tt.err, 3*time.Second); got != tt.want {
			t.Errorf("describe(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestHelloHandler(t *testing.T) {
	srv := httptest.NewServer(HelloHandler("lab-node-1"))
	defer srv.Close()
	tests := []struct {
		method, path string
		wantCode     int
		wantBody     string
	}{
		{http.MethodGet, "/hello", 200, "lab-node-1\n"},
		{http.MethodHead, "/hello", 200, ""},
		{http.MethodPost, "/hello", 405, "method not allowed\n"},
		{http.MethodGet, "/", 404, "404 page not found\n"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode || string(b) != tt.wantBody {
			t.Errorf("%s %s = %d %q, want %d %q", tt.method, tt.path, resp.StatusCode, b, tt.wantCode, tt.wantBody)
		}
	}
}

func TestNonOKStatusFails(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "draining", http.StatusServiceUnavailable)
		}))
	}()
	defer func() { cancel(); <-done }()
	p, err := NewProber(testLogger(t), ProberConfig{NodeName: "a", Port: ln.Addr().(*net.TCPAddr).Port}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := p.probeHTTP(context.Background(), netip.MustParseAddr("127.0.0.1"))
	want := ProbeResult{Err: "unexpected status 503 Service Unavailable"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("probe (-want +got):\n%s", diff)
	}
}
