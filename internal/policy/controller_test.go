package policy

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"glia.dev/glia/internal/state"
)

// A policy that does not fit the maps leaves the address and entry tables
// as last written, however many times in a row it does not fit, and fails
// the isolated endpoints closed.
func TestApplyOverflowKeepsLastWritten(t *testing.T) {
	tables, err := state.New()
	if err != nil {
		t.Fatal(err)
	}
	c := NewController(slog.New(slog.NewTextHandler(io.Discard, nil)), tables, "n1", Limits{IPCache: 2, Policies: 10})
	ipc := func(n int) []*state.IPIdentity {
		var out []*state.IPIdentity
		for i := range n {
			out = append(out, &state.IPIdentity{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, 0, byte(i + 1)}), 32), Identity: uint32(256 + i)})
		}
		return out
	}
	ep := &state.EndpointPolicy{Flags: 1, PolicyID: 7}
	count := func() int {
		n := 0
		for range tables.IPIdentities.All(tables.DB.ReadTxn()) {
			n++
		}
		return n
	}
	c.apply(&Result{IPCache: ipc(2)}, true)
	if got := count(); got != 2 || c.Err() != nil {
		t.Fatalf("a fitting policy: %d addresses written, error %v; want 2, none", got, c.Err())
	}
	for i := range 2 {
		c.apply(&Result{IPCache: ipc(3), Endpoints: []*state.EndpointPolicy{ep}}, false)
		if c.Err() == nil {
			t.Fatalf("overflow %d: no error", i+1)
		}
		if got := count(); got != 2 {
			t.Errorf("overflow %d: %d addresses in the table, want the 2 last written", i+1, got)
		}
		for e := range tables.EndpointPolicies.All(tables.DB.ReadTxn()) {
			if e.PolicyID != 0 || e.Waiting == "" {
				t.Errorf("overflow %d: isolated endpoint policy %d waiting %q, want failed closed", i+1, e.PolicyID, e.Waiting)
			}
		}
	}
}
