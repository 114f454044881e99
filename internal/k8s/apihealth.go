package k8s

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/discovery"
)

// APIHealth is the agent's observed connection to the Kubernetes API: when
// the API server last answered, the last error of a request or a watch, and
// whether the watches have synced. The agent's status and its readiness
// read it; nothing sets it but real answers and real errors.
type APIHealth struct {
	mu          sync.Mutex
	synced      bool
	version     string
	lastSuccess time.Time
	lastError   string
	lastErrorAt time.Time
	now         func() time.Time
}

// NewAPIHealth returns a health record with nothing observed yet.
func NewAPIHealth() *APIHealth { return &APIHealth{now: time.Now} }

// Success records an answer of the API server.
func (h *APIHealth) Success(version string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastSuccess = h.now()
	if version != "" {
		h.version = version
	}
}

// Failure records a failed request or watch.
func (h *APIHealth) Failure(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastError = err.Error()
	h.lastErrorAt = h.now()
}

// Synced records that the informers' caches have synced.
func (h *APIHealth) Synced() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.synced = true
	h.lastSuccess = h.now()
}

// APIState is a snapshot of APIHealth.
type APIState struct {
	Synced      bool
	Version     string
	LastSuccess time.Time
	LastError   string // "" when the last answer came after the last error
}

// State returns what was observed.
func (h *APIHealth) State() APIState {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := APIState{Synced: h.synced, Version: h.version, LastSuccess: h.lastSuccess}
	if h.lastErrorAt.After(h.lastSuccess) || (h.lastError != "" && h.lastSuccess.IsZero()) {
		s.LastError = h.lastError
	}
	return s
}

// Check says what keeps the connection from counting as healthy: the
// watches have not synced, the API server has not answered for longer than
// maxSilence, or its last answer was an error. nil when healthy.
func (h *APIHealth) Check(maxSilence time.Duration) error {
	s := h.State()
	now := h.now()
	switch {
	case !s.Synced:
		if s.LastError != "" {
			return fmt.Errorf("watches have not synced: %s", s.LastError)
		}
		return fmt.Errorf("watches have not synced yet")
	case now.Sub(s.LastSuccess) > maxSilence:
		last := "never"
		if !s.LastSuccess.IsZero() {
			last = now.Sub(s.LastSuccess).Round(time.Second).String() + " ago"
		}
		msg := fmt.Sprintf("the API server has not answered for longer than %s (last answer %s)", maxSilence, last)
		if s.LastError != "" {
			msg += ": " + s.LastError
		}
		return fmt.Errorf("%s", msg)
	}
	return nil
}

// Heartbeat asks the API server for its version every period until ctx
// ends, recording each answer or error in h. It is how the agent notices
// an API server that went away while its watches sit idle.
func Heartbeat(ctx context.Context, log *slog.Logger, d discovery.ServerVersionInterface, h *APIHealth, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	failing := false
	for {
		v, err := d.ServerVersion()
		switch {
		case err != nil:
			h.Failure(fmt.Errorf("server version: %w", err))
			if !failing {
				log.Warn("Kubernetes API server does not answer", "error", err)
			}
			failing = true
		default:
			h.Success(v.GitVersion)
			if failing {
				log.Info("Kubernetes API server answers again", "version", v.GitVersion)
			}
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
