package bpf

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"glia.dev/glia/internal/maps"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func loadTest(t *testing.T, flags uint32) *objects {
	t.Helper()
	requireRoot(t)
	cfg := Config{
		NodeIP:      netip.MustParseAddr("198.18.0.11"),
		PodCIDR:     netip.MustParsePrefix("198.19.1.0/24"),
		ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16"),
		NodeIfIndex: 2,
		Flags:       flags,
	}
	o, err := loadObjects(testLogger(), cfg, "")
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			fmt.Printf("%+v\n", verr)
		}
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func TestLoad(t *testing.T) {
	loadTest(t, FlagKPR|FlagMasquerade|FlagHostRouting)
}

// The socket load balancer loads (the verifier accepts it) with the
// tc programs, sharing their maps.
func TestLoadSocketLB(t *testing.T) {
	requireRoot(t)
	cfg := Config{
		NodeIP: netip.MustParseAddr("198.18.0.11"), PodCIDR: netip.MustParsePrefix("198.19.1.0/24"),
		ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16"), Flags: FlagKPR, SocketLB: true, NetnsCookie: 1,
	}
	o, err := loadObjects(testLogger(), cfg, "")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer o.Close()
	for _, sp := range sockProgs {
		p := o.Sock[sp.name]
		if p == nil {
			t.Fatalf("program %s not loaded", sp.name)
		}
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		ids, _ := info.MapIDs()
		shared := false
		for _, id := range ids {
			if mi, err := o.Maps[maps.NameServices].Info(); err == nil {
				if mid, ok := mi.ID(); ok && mid == id {
					shared = true
				}
			}
		}
		if sp.name == "sock4_connect" && !shared {
			t.Errorf("%s does not use the shared %s map (uses %v)", sp.name, maps.NameServices, ids)
		}
	}
}
