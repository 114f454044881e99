package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/datapath"
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

// The sized maps take their size from the config at load; a pinned map of
// another size is migrated into a new map of the size asked for, and the
// log says which map, what size it had and what the config asks for
// (TestPrivilegedMigrateSize checks that its entries are carried over).
func TestPrivilegedMapSizes(t *testing.T) {
	requirePrivileged(t)
	pinDir := filepath.Join(privateBPFFS(t), "node1")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	load := func(sizes datapath.MapSizes) map[string]uint32 {
		t.Helper()
		o, err := loadObjects(log, Config{NodeIP: netip.MustParseAddr(nodeIP), PodCIDR: netip.MustParsePrefix("198.19.1.0/24"),
			ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16"), MaxEntries: MaxEntries(sizes)}, pinDir)
		must(t, err)
		defer o.Close()
		_, err = o.finish()
		must(t, err)
		got := map[string]uint32{}
		for _, name := range []string{maps.NameServices, maps.NameBackends, maps.NameAffinity, maps.NameSvcSlots, maps.NameMaglev, maps.NameCT, maps.NameNAT, maps.NameEndpoints} {
			info, err := o.Maps[name].Info()
			must(t, err)
			got[name] = info.MaxEntries
		}
		return got
	}
	want := map[string]uint32{maps.NameServices: 1000, maps.NameBackends: 1000, maps.NameAffinity: 1000, maps.NameSvcSlots: 4000,
		maps.NameMaglev: 4000, maps.NameCT: 2048, maps.NameNAT: 4096, maps.NameEndpoints: 65536}
	if diff := cmp.Diff(want, load(datapath.MapSizes{LB: 1000, CT: 2048, NAT: 4096})); diff != "" {
		t.Fatalf("map sizes (-want +got):\n%s", diff)
	}
	// The same sizes again: the pinned maps are re-used, nothing replaced.
	load(datapath.MapSizes{LB: 1000, CT: 2048, NAT: 4096})
	if strings.Contains(logs.String(), "Migrated a pinned map") {
		t.Fatalf("maps migrated although their size did not change:\n%s", logs.String())
	}
	// Another CT size: that map is migrated, and the log says why.
	want[maps.NameCT] = 8192
	if diff := cmp.Diff(want, load(datapath.MapSizes{LB: 1000, CT: 8192, NAT: 4096})); diff != "" {
		t.Fatalf("map sizes after the change (-want +got):\n%s", diff)
	}
	if !strings.Contains(logs.String(), "it has 2048 entries and the config asks for 8192") || !strings.Contains(logs.String(), "map="+maps.NameCT) {
		t.Errorf("the replacement is not explained in the log:\n%s", logs.String())
	}
	if n := strings.Count(logs.String(), "Migrated a pinned map"); n != 1 {
		t.Errorf("%d maps migrated, want only %s:\n%s", n, maps.NameCT, logs.String())
	}
}
