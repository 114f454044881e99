package agent

import (
	"context"
	"errors"
	"io"
	"iter"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/k8s"
	"glia.dev/glia/internal/reconcile"
	"glia.dev/glia/internal/state"
)

func TestLiveness(t *testing.T) {
	clock := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	l := newLiveness()
	l.now = func() time.Time { return clock }
	if err := l.check(); err != nil {
		t.Fatalf("starting agent: %v", err)
	}
	l.beat()
	clock = clock.Add(livenessTimeout)
	if err := l.check(); err != nil {
		t.Fatalf("loop turned %s ago: %v", livenessTimeout, err)
	}
	clock = clock.Add(time.Second)
	if err := l.check(); err == nil || !strings.Contains(err.Error(), "has not turned for 2m1s") {
		t.Fatalf("stuck loop: %v", err)
	}
}

// probeAgent is an agent as far as its probes see it.
func probeAgent() *Agent {
	return &Agent{cfg: Config{StateDir: "/var/lib/glia"}, ctrl: newControllers(), live: newLiveness(), apiHealth: k8s.NewAPIHealth()}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestProbes(t *testing.T) {
	a := probeAgent()
	h := probeHandler(a.live.check, a.readiness)

	// Starting: alive, not ready, and /readyz names every failing check.
	if code, body := get(t, h, PathLiveness); code != 200 || body != "ok\n" {
		t.Fatalf("healthz while starting = %d %q", code, body)
	}
	code, body := get(t, h, PathReadiness)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while starting = %d", code)
	}
	for _, want := range []string{
		"[-]endpoints-restored: endpoints are being restored from /var/lib/glia",
		"[-]datapath: the datapath is not initialised yet",
		"[-]kubernetes: watches have not synced yet",
		"[+]reconcilers ok",
		"readyz check failed",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("readyz body lacks %q:\n%s", want, body)
		}
	}

	// Restored, initialised, programmed, synced: ready.
	a.restored.Store(true)
	a.initialised.Store(true)
	if _, body := get(t, h, PathReadiness); !strings.Contains(body, "[-]datapath: the datapath has not been programmed") {
		t.Errorf("initialised but not programmed:\n%s", body)
	}
	a.programmed.Store(true)
	a.apiHealth.Synced()
	if code, body := get(t, h, PathReadiness); code != 200 || !strings.HasSuffix(body, "ok\n") || strings.Contains(body, "[-]") {
		t.Fatalf("ready agent: %d\n%s", code, body)
	}

	// A reconciler with an object in error makes it unready, named with
	// the object and its error; once the retry succeeds it is ready again.
	ops := &flakyOps{err: errors.New("permission denied")}
	tables, recs := startRecs(t, ops)
	a.recs.Store(recs)
	insertAll(tables.DB, tables.Sysctls, []*state.Sysctl{{Name: "net.ipv4.ip_forward", Value: "1"}})
	waitReadiness(t, a, false)
	code, body = get(t, h, PathReadiness)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]reconcilers: in error: sysctls (1 in error: net.ipv4.ip_forward: permission denied)") {
		t.Fatalf("reconciler in error: %d\n%s", code, body)
	}
	ops.set(nil)
	waitReadiness(t, a, true)
	if code, _ := get(t, h, PathReadiness); code != 200 {
		t.Fatalf("after the reconciler recovered: %d", code)
	}

	// The status shows the same checks.
	if !ready(a.readiness()) {
		t.Fatal("readiness() disagrees with /readyz")
	}

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathReadiness, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /readyz = %d", rec.Code)
	}
}

// flakyOps is a sysctl reconciler whose updates fail while err is set.
type flakyOps struct {
	mu  sync.Mutex
	err error
}

func (f *flakyOps) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *flakyOps) Update(context.Context, statedb.ReadTxn, statedb.Revision, *state.Sysctl) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *flakyOps) Delete(context.Context, statedb.ReadTxn, statedb.Revision, *state.Sysctl) error {
	return nil
}

func (f *flakyOps) Prune(context.Context, statedb.ReadTxn, iter.Seq2[*state.Sysctl, statedb.Revision]) error {
	return nil
}

// startRecs runs a sysctls reconciler on ops, retrying fast.
func startRecs(t *testing.T, ops reconciler.Operations[*state.Sysctl]) (*state.Tables, *reconcile.Set) {
	t.Helper()
	tables, err := state.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := tables.DB.Start(); err != nil {
		t.Fatal(err)
	}
	recs, err := reconcile.Start(t.Context(), discard(), tables.DB,
		reconcile.For(datapath.ReconcilerSysctls, tables.Sysctls, ops, reconcile.Periods{RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		recs.Stop(context.Background())
		tables.DB.Stop()
	})
	return tables, recs
}

func waitReadiness(t *testing.T, a *Agent, want bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ready(a.readiness()) != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("readiness never became %t: %+v", want, a.readiness())
		}
	}
}
