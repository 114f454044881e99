package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"glia.dev/glia/internal/k8s"
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

	// A reconciler in error makes it unready, named with its error.
	a.ctrl.run(t.Context(), "sync-nodes", func(context.Context) error { return errors.New("route 198.19.2.0/24: network unreachable") })
	code, body = get(t, h, PathReadiness)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]reconcilers: in error: sync-nodes (1 failures: route 198.19.2.0/24: network unreachable)") {
		t.Fatalf("reconciler in error: %d\n%s", code, body)
	}
	a.ctrl.run(t.Context(), "sync-nodes", func(context.Context) error { return nil })
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
