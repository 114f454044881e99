package reconcile

import (
	"context"
	"errors"
	"io"
	"iter"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/statedb"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/state"
)

// fakeKernel is an endpoint datapath that keeps what it programmed.
type fakeKernel struct {
	mu         sync.Mutex
	programmed map[string]bool
	fail       map[string]error
	prunes     int
}

func (f *fakeKernel) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, ep *state.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[ep.Key()]; err != nil {
		return err
	}
	f.programmed[ep.Key()] = true
	return nil
}

func (f *fakeKernel) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, ep *state.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.programmed, ep.Key())
	return nil
}

func (f *fakeKernel) Prune(_ context.Context, _ statedb.ReadTxn, eps iter.Seq2[*state.Endpoint, statedb.Revision]) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prunes++
	keep := map[string]bool{}
	for ep := range eps {
		keep[ep.Key()] = true
	}
	for k := range f.programmed {
		if !keep[k] {
			delete(f.programmed, k)
		}
	}
	return nil
}

func (f *fakeKernel) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.programmed {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func ep(id, ip string) *state.Endpoint {
	return &state.Endpoint{Attachment: state.Attachment{ContainerID: id, IfName: "eth0"}, IP: netip.MustParseAddr(ip), HostIfName: "gl" + id}
}

// The endpoint manager's door to the desired state: Program answers once
// the reconciler programmed the endpoint, or with its error; Remove once
// it is gone; Restored hands the restore over, after which the reconciler
// prunes what was not handed over — and not before.
func TestEndpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tables, err := state.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := tables.DB.Start(); err != nil {
		t.Fatal(err)
	}
	defer tables.DB.Stop()
	k := &fakeKernel{programmed: map[string]bool{"stale/eth0": true}, fail: map[string]error{}}
	eps := NewEndpoints(tables)
	set, err := Start(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), tables.DB,
		For(datapath.ReconcilerEndpoints, tables.Endpoints, k, Periods{Prune: time.Hour, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer set.Stop(context.Background())
	eps.Bind(set)

	// Before the restore: programmed, and nothing pruned yet.
	if err := eps.Program(ctx, ep("health", "198.19.1.1")); err != nil {
		t.Fatalf("Program: %v", err)
	}
	if got := k.keys(); !slices.Equal(got, []string{"health/eth0", "stale/eth0"}) {
		t.Fatalf("programmed before the restore: %v", got)
	}
	// A failure is the answer, and the object says it.
	k.fail["bad/eth0"] = errors.New("host interface glbad: link not found")
	if err := eps.Program(ctx, ep("bad", "198.19.1.9")); err == nil || err.Error() != "host interface glbad: link not found" {
		t.Fatalf("Program of a failing endpoint = %v", err)
	}
	if s := set.Summaries(); len(s) != 1 || s[0].Errors != 1 || s[0].Failing[0] != "bad/eth0: host interface glbad: link not found" {
		t.Fatalf("summary with a failing endpoint: %+v", s)
	}
	if err := eps.Remove(ctx, state.Attachment{ContainerID: "bad", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}

	// The restore: the live endpoint goes in, and the prune takes the stale one.
	eps.Restored([]*state.Endpoint{ep("live", "198.19.1.5")})
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(k.keys(), []string{"health/eth0", "live/eth0"}); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after the restore: %v, want health and live", k.keys())
		}
	}
	// Remove waits until the kernel state is gone.
	if err := eps.Remove(ctx, state.Attachment{ContainerID: "live", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if got := k.keys(); !slices.Equal(got, []string{"health/eth0"}) {
		t.Fatalf("after Remove: %v", got)
	}
	// Removing what is not there is fine.
	if err := eps.Remove(ctx, state.Attachment{ContainerID: "never", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if s := set.Summaries(); s[0].Objects != 1 || s[0].Done != 1 || s[0].Errors != 0 {
		t.Fatalf("summary at the end: %+v", s)
	}
}
