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

func TestProbeKernel(t *testing.T) {
	requireRoot(t)
	f, err := ProbeKernel()
	if err != nil {
		t.Fatal(err)
	}
	// This project targets 6.6+ kernels, where all of these exist.
	if !f.TCX || !f.RedirectPeer || !f.RedirectNeigh || !f.FIBLookup {
		t.Errorf("features %+v: expected all on this kernel", f)
	}
}
