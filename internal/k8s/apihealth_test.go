package k8s

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAPIHealthCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		steps   func(h *APIHealth, clock *time.Time)
		wantErr string // "" = healthy
	}{
		{name: "nothing observed", steps: func(*APIHealth, *time.Time) {}, wantErr: "watches have not synced yet"},
		{name: "list refused before sync", steps: func(h *APIHealth, _ *time.Time) {
			h.Failure(errors.New("nodes is forbidden"))
		}, wantErr: "watches have not synced: nodes is forbidden"},
		{name: "synced and answering", steps: func(h *APIHealth, c *time.Time) {
			h.Synced()
			*c = c.Add(30 * time.Second)
			h.Success("v1.37.2")
		}},
		{name: "synced, then silent too long", steps: func(h *APIHealth, c *time.Time) {
			h.Synced()
			*c = c.Add(61 * time.Second)
		}, wantErr: "has not answered for longer than 1m0s (last answer 1m1s ago)"},
		{name: "silent with errors says the error", steps: func(h *APIHealth, c *time.Time) {
			h.Synced()
			*c = c.Add(90 * time.Second)
			h.Failure(errors.New("connection refused"))
		}, wantErr: "(last answer 1m30s ago): connection refused"},
		{name: "a recent error after a recent answer stays healthy until silence", steps: func(h *APIHealth, c *time.Time) {
			h.Synced()
			*c = c.Add(10 * time.Second)
			h.Failure(errors.New("watch closed"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := t0
			h := NewAPIHealth()
			h.now = func() time.Time { return clock }
			tt.steps(h, &clock)
			err := h.Check(time.Minute)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Check = %v, want healthy", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Check = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAPIHealthState(t *testing.T) {
	clock := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	h := NewAPIHealth()
	h.now = func() time.Time { return clock }
	h.Failure(errors.New("connection refused"))
	if s := h.State(); s.LastError != "connection refused" {
		t.Fatalf("LastError before any answer = %q", s.LastError)
	}
	clock = clock.Add(time.Second)
	h.Success("v1.37.2")
	if s := h.State(); s.LastError != "" || s.Version != "v1.37.2" || !s.LastSuccess.Equal(clock) {
		t.Fatalf("after an answer: %+v", s)
	}
}
