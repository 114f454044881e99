package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/httpserve"
)

// Probe paths on --health-probe-bind-address.
const (
	PathLiveness  = "/healthz"
	PathReadiness = "/readyz"
)

// livenessTimeout is how long the run loop may go without turning before
// the liveness probe fails: a loop stuck that long is not coming back, and
// the kubelet restarts the agent (which never drops traffic).
const livenessTimeout = 2 * time.Minute

// heartbeatPeriod is how often the run loop turns when nothing happens.
const heartbeatPeriod = 10 * time.Second

// liveness records that the agent's loops turn.
type liveness struct {
	mu      sync.Mutex
	started bool // the run loop has started
	last    time.Time
	now     func() time.Time
}

func newLiveness() *liveness { return &liveness{now: time.Now} }

// beat records a turn of the run loop.
func (l *liveness) beat() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.started, l.last = true, l.now()
}

// check is nil while the agent starts and while its run loop turns.
func (l *liveness) check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		return nil // starting: restore and the first sync take what they take (startupProbe)
	}
	if d := l.now().Sub(l.last); d > livenessTimeout {
		return fmt.Errorf("the agent's run loop has not turned for %s (longer than %s)", d.Round(time.Second), livenessTimeout)
	}
	return nil
}

// probeHandler serves the liveness and readiness probes. readiness is
// the same list of checks `glia status` shows.
func probeHandler(live func() error, readiness func() []api.ReadinessCheck) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(PathLiveness, func(w http.ResponseWriter, r *http.Request) {
		if !getOnly(w, r) {
			return
		}
		if err := live(); err != nil {
			http.Error(w, "[-]run-loop: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc(PathReadiness, func(w http.ResponseWriter, r *http.Request) {
		if !getOnly(w, r) {
			return
		}
		body, ready := renderChecks(readiness())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, body)
	})
	return mux
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	return true
}

// renderChecks writes one line per check, failing ones first, as
// kube-apiserver's verbose /readyz does: "[-]name: why" or "[+]name ok".
func renderChecks(checks []api.ReadinessCheck) (string, bool) {
	var failed, passed strings.Builder
	for _, c := range checks {
		if c.OK {
			fmt.Fprintf(&passed, "[+]%s ok\n", c.Name)
		} else {
			fmt.Fprintf(&failed, "[-]%s: %s\n", c.Name, c.Message)
		}
	}
	if failed.Len() > 0 {
		return failed.String() + passed.String() + "readyz check failed\n", false
	}
	return passed.String() + "ok\n", true
}

// serveProbes serves the probes on addr until ctx ends.
func serveProbes(ctx context.Context, addr string, h http.Handler) (func() error, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--health-probe-bind-address %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	return func() error { return httpserve.Serve(ctx, srv, ln, time.Second) }, nil
}
