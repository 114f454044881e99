package connectivity

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEvaluateConn(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tgt := ConnTarget{Name: "pod x", Addr: "198.19.1.5:8000"}
	tests := []struct {
		name string
		ts   ConnTargetState
		want ConnVerdict
	}{
		{
			name: "clean",
			ts:   ConnTargetState{ConnTarget: tgt, Connected: true, Connections: 1, LastTick: t0.Add(-100 * time.Millisecond), Requests: 50},
			want: ConnVerdict{Requests: 50, Connections: 1},
		},
		{
			name: "a reset, a stall that resumed and a failed request",
			ts: ConnTargetState{ConnTarget: tgt, Connected: true, Connections: 2, LastTick: t0, Requests: 50, Failed: 1,
				Events: []ConnEvent{
					{Time: t0.Add(-10 * time.Second), Kind: EventStall, Duration: 1500 * time.Millisecond, Detail: "resumed"},
					{Time: t0.Add(-5 * time.Second), Kind: EventReset, Duration: time.Minute, Detail: "read: connection reset by peer"},
					{Time: t0.Add(-4 * time.Second), Kind: EventRequestFailed, Duration: 2 * time.Second, Detail: "i/o timeout"},
				}},
			want: ConnVerdict{Resets: 1, Stalls: 1, FailedRequests: 1, Requests: 50, Connections: 2, Problems: []string{
				"03:03:55.000 connection stalled for 1.5s (resumed)",
				"03:04:00.000 connection reset after 1m0s up: read: connection reset by peer",
				"03:04:01.000 request failed after 2s: i/o timeout",
			}},
		},
		{
			name: "stall still going on",
			ts:   ConnTargetState{ConnTarget: tgt, Connected: true, Connections: 1, LastTick: t0.Add(-3 * time.Second), StalledSince: t0.Add(-3 * time.Second)},
			want: ConnVerdict{Stalls: 1, Connections: 1, Problems: []string{"03:04:02.000 connection stalled since, 3s at the last update"}},
		},
		{
			name: "silent for longer than the stall bound without the client noticing yet",
			ts:   ConnTargetState{ConnTarget: tgt, Connected: true, Connections: 1, LastTick: t0.Add(-2 * time.Second)},
			want: ConnVerdict{Stalls: 1, Connections: 1, Problems: []string{"03:04:03.000 connection stalled since, 2s at the last update"}},
		},
		{
			name: "down",
			ts:   ConnTargetState{ConnTarget: tgt, Connections: 1, LastTick: t0.Add(-time.Minute)},
			want: ConnVerdict{Connections: 1, Problems: []string{"no long-lived connection up at the last update"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EvaluateConn(tt.ts, t0, time.Second)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestParseConnTarget(t *testing.T) {
	got, err := ParseConnTarget("pod glia-test/s=x (lab-node-2)=198.19.1.5:8000")
	if err != nil {
		t.Fatal(err)
	}
	want := ConnTarget{Name: "pod glia-test/s=x (lab-node-2)", Addr: "198.19.1.5:8000"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if back, err := ParseConnTarget(got.String()); err != nil || back != got {
		t.Errorf("round trip: %v %v", back, err)
	}
	for _, bad := range []string{"noequals", "=1.2.3.4:5", "x=1.2.3.4"} {
		if _, err := ParseConnTarget(bad); err == nil {
			t.Errorf("ParseConnTarget(%q): want an error", bad)
		}
	}
}

func readState(t *testing.T, path string) (ConnState, bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return ConnState{}, false
	}
	var st ConnState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state file: %v", err)
	}
	return st, true
}

// waitState polls the client's state file until cond holds.
func waitState(t *testing.T, path string, what string, cond func(ConnState) bool) ConnState {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, ok := readState(t, path)
		if ok && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("client state never reached %q; last: %+v", what, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startClient(t *testing.T, targets ...ConnTarget) (statePath string, stop func()) {
	t.Helper()
	dir := t.TempDir()
	statePath = filepath.Join(dir, "c", "state.json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunConnClient(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), ConnClientConfig{
			Name: "c", Targets: targets, StatePath: statePath,
			RequestInterval: 50 * time.Millisecond, StallAfter: 300 * time.Millisecond,
			RequestTimeout: time.Second, WriteInterval: 50 * time.Millisecond,
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("client: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return statePath, stop
}

func TestConnClientServerUninterrupted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srvDone := make(chan error, 1)
	go func() { srvDone <- ServeConnDisrupt(ctx, ln, "server-1") }()
	state, stop := startClient(t, ConnTarget{Name: "server", Addr: ln.Addr().String()})
	st := waitState(t, state, "5 ticks and 5 requests", func(st ConnState) bool {
		ts := st.Targets[0]
		return ts.Connected && ts.Ticks >= 5 && ts.Requests >= 5
	})
	v := EvaluateConn(st.Targets[0], st.Updated, 300*time.Millisecond)
	if !v.OK() || v.Connections != 1 {
		t.Errorf("uninterrupted run judged %+v", v)
	}
	// Stopping the server resets the long-lived connection and fails requests.
	cancel()
	if err := <-srvDone; err != nil {
		t.Fatalf("server: %v", err)
	}
	st = waitState(t, state, "a reset and a failed request", func(st ConnState) bool {
		var reset, failed bool
		for _, ev := range st.Targets[0].Events {
			reset = reset || ev.Kind == EventReset
			failed = failed || ev.Kind == EventRequestFailed
		}
		return reset && failed
	})
	v = EvaluateConn(st.Targets[0], st.Updated, 300*time.Millisecond)
	if v.OK() || v.Resets == 0 || v.FailedRequests == 0 {
		t.Errorf("interrupted run judged %+v", v)
	}
	stop()
	if _, err := os.Stat(filepath.Dir(state)); !os.IsNotExist(err) {
		t.Errorf("client left its state directory behind: %v", err)
	}
}

// TestConnClientSeesStall: a server that goes silent for longer than the
// stall bound, then resumes, is recorded as one stall of that length.
func TestConnClientSeesStall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	resume := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				if strings.TrimSpace(line) == "REQ" {
					fmt.Fprintf(c, "OK stall-server\n")
					return
				}
				for i := 0; i < 3; i++ {
					fmt.Fprintf(c, "tick %d\n", i)
					time.Sleep(TickInterval)
				}
				<-resume // silent until the test has seen the stall begin
				for i := 3; ; i++ {
					if _, err := fmt.Fprintf(c, "tick %d\n", i); err != nil {
						return
					}
					time.Sleep(TickInterval)
				}
			}()
		}
	}()
	state, _ := startClient(t, ConnTarget{Name: "server", Addr: ln.Addr().String()})
	st := waitState(t, state, "stalled", func(st ConnState) bool { return !st.Targets[0].StalledSince.IsZero() })
	if v := EvaluateConn(st.Targets[0], st.Updated, 300*time.Millisecond); v.Stalls != 1 {
		t.Errorf("ongoing stall judged %+v", v)
	}
	close(resume)
	st = waitState(t, state, "stall recorded", func(st ConnState) bool {
		return len(st.Targets[0].Events) > 0 && st.Targets[0].StalledSince.IsZero()
	})
	ev := st.Targets[0].Events[0]
	if ev.Kind != EventStall || ev.Detail != "resumed" || ev.Duration < 300*time.Millisecond {
		t.Errorf("event %+v, want a resumed stall longer than 300ms", ev)
	}
	if st.Targets[0].Connections != 1 {
		t.Errorf("%d connections opened, want the one that stalled and resumed", st.Targets[0].Connections)
	}
}
