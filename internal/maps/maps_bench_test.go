package maps_test

import (
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	bpfdp "glia.dev/glia/internal/datapath/bpf"
	"glia.dev/glia/internal/maps"
)

// Benchmarks of the typed map updates the agent makes, on maps created
// from the compiled objects' own definitions, at 1k, 10k and 100k entries
// already present.
//
//	go test -run '^$' -bench . ./internal/maps/

var sizes = []struct {
	name string
	n    int
}{{"1k", 1_000}, {"10k", 10_000}, {"100k", 100_000}}

// newMap creates map name as bpf/lib/maps.h defines it, with at least
// minEntries room.
func newMap(b *testing.B, name string, minEntries uint32) *ebpf.Map {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root to create BPF maps")
	}
	spec, err := bpfdp.LoadFromContainer()
	if err != nil {
		b.Fatal(err)
	}
	ms, ok := spec.Maps[name]
	if !ok {
		b.Fatalf("no map %s in from_container", name)
	}
	ms = ms.Copy()
	ms.Pinning = ebpf.PinNone
	ms.MaxEntries = max(ms.MaxEntries, minEntries)
	m, err := ebpf.NewMap(ms)
	if err != nil {
		b.Fatalf("create %s: %v", name, err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

func svcKey(i int) maps.SvcKey {
	return maps.SvcKey{Addr: maps.IPv4{198, 18, byte(128 + i/65536%128), byte(i / 256 % 256)},
		Port: maps.PortFrom(uint16(80 + i%256)), Proto: maps.ProtoTCP}
}

func tuple(i int) maps.Tuple {
	return maps.Tuple{SAddr: maps.IPv4{198, 19, byte(1 + i/65536), byte(i / 256 % 256)}, DAddr: maps.IPv4{198, 18, 128, 10},
		SPort: maps.PortFrom(uint16(1024 + i%256)), DPort: maps.PortFrom(80), Proto: maps.ProtoTCP}
}

// BenchmarkServicesUpdate: replacing one frontend among N.
func BenchmarkServicesUpdate(b *testing.B) {
	for _, s := range sizes {
		b.Run(s.name, func(b *testing.B) {
			svcs := maps.NewServices(newMap(b, maps.NameServices, uint32(s.n)*2))
			for i := range s.n {
				if err := svcs.Update(svcKey(i), maps.SvcValue{ID: uint32(i + 1), Count: 2}); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; b.Loop(); i++ {
				if err := svcs.Update(svcKey(i%s.n), maps.SvcValue{ID: uint32(i%s.n + 1), Count: uint16(1 + i%2)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBackendsUpdate: writing one backend among N.
func BenchmarkBackendsUpdate(b *testing.B) {
	for _, s := range sizes {
		b.Run(s.name, func(b *testing.B) {
			be := maps.NewBackends(newMap(b, maps.NameBackends, uint32(s.n)*2))
			addr := func(i int) maps.Backend {
				return maps.Backend{Addr: maps.IPv4From(netip.AddrFrom4([4]byte{198, 19, byte(i / 65536), byte(i / 256 % 256)})),
					Port: maps.PortFrom(8080), Proto: maps.ProtoTCP}
			}
			for i := range s.n {
				if err := be.Update(uint32(i+1), addr(i)); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; b.Loop(); i++ {
				if err := be.Update(uint32(i%s.n+1), addr(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSlotsUpdateBatch: writing the two backend slots of one service
// in one batch, with N services' slots present.
func BenchmarkSlotsUpdateBatch(b *testing.B) {
	for _, s := range sizes {
		b.Run(s.name, func(b *testing.B) {
			slots := maps.NewSlots(newMap(b, maps.NameSvcSlots, uint32(s.n)*4))
			for i := range s.n {
				if err := slots.UpdateBatch(uint32(i+1), 1, []uint32{uint32(2*i + 1), uint32(2*i + 2)}); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; b.Loop(); i++ {
				if err := slots.UpdateBatch(uint32(i%s.n+1), 1, []uint32{7, 8}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCTUpdate and BenchmarkCTLookup: the conntrack map with N flows.
func BenchmarkCTUpdate(b *testing.B) {
	for _, s := range sizes {
		b.Run(s.name, func(b *testing.B) {
			ct := maps.NewCT(newMap(b, maps.NameCT, uint32(s.n)*2))
			for i := range s.n {
				if err := ct.Update(tuple(i), maps.CTEntry{BackendID: 1}); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; b.Loop(); i++ {
				if err := ct.Update(tuple(i%s.n), maps.CTEntry{BackendID: uint32(i)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCTLookup(b *testing.B) {
	for _, s := range sizes {
		b.Run(s.name, func(b *testing.B) {
			ct := maps.NewCT(newMap(b, maps.NameCT, uint32(s.n)*2))
			for i := range s.n {
				if err := ct.Update(tuple(i), maps.CTEntry{BackendID: 1}); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; b.Loop(); i++ {
				if _, ok, err := ct.Lookup(tuple(i % s.n)); err != nil || !ok {
					b.Fatalf("lookup %d: found %v, %v", i%s.n, ok, err)
				}
			}
		})
	}
}
