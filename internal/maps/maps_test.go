package maps_test

import (
	"net/netip"
	"os"
	"sort"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"

	bpfdp "glia.dev/glia/internal/datapath/bpf"
	"glia.dev/glia/internal/maps"
)

// testMap creates map name as bpf/lib/maps.h defines it.
func testMap(t *testing.T, name string) *ebpf.Map {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create BPF maps")
	}
	spec, err := bpfdp.LoadFromContainer()
	if err != nil {
		t.Fatal(err)
	}
	ms, ok := spec.Maps[name]
	if !ok {
		t.Fatalf("no map %s in from_container", name)
	}
	ms = ms.Copy()
	ms.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestList: List returns every entry, whether the map is read in batches
// (hash maps) or one entry at a time (the tunnel's LPM trie), across
// batch boundaries.
func TestList(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 513, 1500} {
		t.Run("services", func(t *testing.T) {
			svcs := maps.NewServices(testMap(t, maps.NameServices))
			want := map[maps.SvcKey]maps.SvcValue{}
			for i := range n {
				k, v := svcKey(i), maps.SvcValue{ID: uint32(i + 1), Count: uint16(i % 7)}
				want[k] = v
				if err := svcs.Update(k, v); err != nil {
					t.Fatal(err)
				}
			}
			list, err := svcs.List()
			if err != nil {
				t.Fatal(err)
			}
			got := map[maps.SvcKey]maps.SvcValue{}
			for _, e := range list {
				got[e.Key] = e.Value
			}
			if len(list) != n {
				t.Errorf("%d entries listed, want %d", len(list), n)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("%d services (-want +got):\n%s", n, d)
			}
		})
		t.Run("tunnel", func(t *testing.T) {
			tun := maps.NewTunnel(testMap(t, maps.NameTunnel))
			set := map[string]bool{}
			for i := range min(n, 600) {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i % 256), 0}), 24-i/256)
				if err := tun.Update(p, netip.AddrFrom4([4]byte{198, 18, 0, byte(i%250 + 1)})); err != nil {
					t.Fatal(err)
				}
				set[p.Masked().String()] = true
			}
			var want []string
			for p := range set {
				want = append(want, p)
			}
			list, err := tun.List()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range list {
				got = append(got, e.Prefix.String())
			}
			sort.Strings(want)
			sort.Strings(got)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("tunnel entries (-want +got):\n%s", d)
			}
		})
	}
}

// TestSlotsDeleteBatch: a range of slots goes, including one with holes
// (a missing key is not an error), and nothing else.
func TestSlotsDeleteBatch(t *testing.T) {
	slots := maps.NewSlots(testMap(t, maps.NameSvcSlots))
	for svc := uint32(1); svc <= 3; svc++ {
		if err := slots.UpdateBatch(svc, 1, []uint32{10, 11, 12, 13}); err != nil {
			t.Fatal(err)
		}
	}
	if err := slots.Delete(maps.SlotKey{SvcID: 3, Slot: 2}); err != nil {
		t.Fatal(err)
	}
	if err := slots.DeleteBatch(2, 1, 4); err != nil {
		t.Errorf("delete batch: %v", err)
	}
	if err := slots.DeleteBatch(3, 1, 4); err != nil {
		t.Errorf("delete batch with a hole: %v", err)
	}
	list, err := slots.List()
	if err != nil {
		t.Fatal(err)
	}
	got := map[maps.SlotKey]uint32{}
	for _, e := range list {
		got[e.Key] = e.BackendID
	}
	want := map[maps.SlotKey]uint32{{SvcID: 1, Slot: 1}: 10, {SvcID: 1, Slot: 2}: 11, {SvcID: 1, Slot: 3}: 12, {SvcID: 1, Slot: 4}: 13}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("slots left (-want +got):\n%s", d)
	}
}
