package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/maps"
)

// Pinned maps of an older layout or another size, as an earlier glia (or
// an earlier config) left them in a bpffs, are migrated by the loader:
// their entries carried into the new maps, what cannot be carried
// reported, a layout this glia may not use refused before anything
// changed.

// ctV1 is a synthetic older layout of glia_ct for these tests: the
// current ct_entry without rev_daddr and the TCP flag bytes (24 bytes:
// last_seen, backend_id, svc_id, rev_saddr, rev_sport, flags).
const ctV1ValueSize = 24

// ctV1To2 converts a ctV1 entry into the current ct_entry.
func ctV1To2(k, v []byte) ([]byte, []byte, bool) {
	if len(v) != ctV1ValueSize {
		return nil, nil, false
	}
	out := make([]byte, 32)
	copy(out[0:20], v[0:20])   // last_seen, backend_id, svc_id, rev_saddr
	copy(out[24:28], v[20:24]) // rev_sport, flags (rev_daddr stays 0: no hairpin in v1)
	return k, out, true
}

// ctV2To1 is the inverse, to fill an old map from current entries.
func ctV2To1(v []byte) []byte {
	out := make([]byte, ctV1ValueSize)
	copy(out[0:20], v[0:20])
	copy(out[20:24], v[24:28])
	return out
}

// testRegistry is glia's registry with glia_ct's history made two
// versions long: the synthetic v1, then the current layout as v2.
func testRegistry(ctUp maps.Converter) maps.Registry {
	reg := maps.Layouts()
	cur := reg[maps.NameCT][0]
	v1 := cur
	v1.ValueSize, v1.Fields = ctV1ValueSize, ""
	cur.Version, cur.Compat, cur.Up = 2, 2, ctUp
	reg[maps.NameCT] = []maps.Layout{v1, cur}
	return reg
}

func pinnedConfig(reg maps.Registry, sizes datapath.MapSizes) Config {
	return Config{NodeIP: netip.MustParseAddr(nodeIP), PodCIDR: netip.MustParsePrefix("198.19.1.0/24"),
		ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16"), NodeIfIndex: 2, Flags: FlagKPR,
		MaxEntries: MaxEntries(sizes), Layouts: reg}
}

// loadPinned loads objects pinned in dir and finishes the migration (no
// program is attached in these tests).
func loadPinned(t *testing.T, log *slog.Logger, dir string, cfg Config) (*objects, []maps.Migration) {
	t.Helper()
	o, err := loadObjects(log, cfg, dir)
	must(t, err)
	migs, err := o.finish()
	must(t, err)
	return o, migs
}

func mapIDOf(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	id, err := mapID(m)
	must(t, err)
	return id
}

func pinnedID(t *testing.T, path string) ebpf.MapID {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(path, nil)
	must(t, err)
	defer m.Close()
	return mapIDOf(t, m)
}

// swapPins lists <name>_swap pins left in dir.
func swapPins(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), swapSuffix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// ctRows lists a CT map sorted by key.
func ctRows(t *testing.T, m *ebpf.Map) []maps.CTRow {
	t.Helper()
	rows, err := maps.NewCT(m).List()
	must(t, err)
	key := func(r maps.CTRow) string { return fmt.Sprintf("%s/%d", r.Key, r.Key.Dir) }
	sort.Slice(rows, func(i, j int) bool { return key(rows[i]) < key(rows[j]) })
	return rows
}

// fillCT writes n synthetic established TCP flows (forward and reply
// entries), the flow i last seen at base+i.
func fillCT(t *testing.T, ct *maps.CT, n int, base uint64) {
	t.Helper()
	for i := range n {
		sport := uint16(20000 + i)
		fwd := tuple(podA, vip, sport, 80, maps.ProtoTCP, maps.DirCTService)
		rep := tuple(podFar, podA, 8080, sport, maps.ProtoTCP, maps.DirCTReply)
		e := maps.CTEntry{LastSeen: base + uint64(i), BackendID: 7, SvcID: 3, RevSAddr: maps.IPv4From(netip.MustParseAddr(vip)),
			RevSPort: maps.PortFrom(80), Flags: maps.CTFlagTracked | maps.CTFlagSeenNonSyn | maps.CTFlagSeenReply}
		must(t, ct.Update(fwd, e))
		must(t, ct.Update(rep, e))
	}
}

// An earlier glia (61f425b and before) pinned its maps without layout
// records: the loader adopts them as they are (same maps, same entries)
// and records their layout.
func TestPrivilegedMigrateAdoptsUnrecordedPins(t *testing.T) {
	requirePrivileged(t)
	dir := filepath.Join(privateBPFFS(t), "node1")
	sizes := datapath.MapSizes{LB: 1000, CT: 2048, NAT: 4096}
	// What the earlier loader did: every map created and pinned, no records.
	all, err := specs()
	must(t, err)
	for _, spec := range all {
		for name, n := range MaxEntries(sizes) {
			if ms, ok := spec.Maps[name]; ok {
				ms.MaxEntries = n
			}
		}
	}
	// (61f425b had no network policy maps: those are policydp's.)
	earlier := all["from_container"].Copy()
	for name := range policyMaps {
		delete(earlier.Maps, name)
	}
	old, err := newMaps(earlier, MaxEntries(sizes))
	must(t, err)
	must(t, os.MkdirAll(dir, 0o700))
	ids := map[string]ebpf.MapID{}
	for name, m := range old {
		must(t, m.Pin(filepath.Join(dir, name)))
		ids[name] = mapIDOf(t, m)
	}
	fillCT(t, maps.NewCT(old[maps.NameCT]), 10, monoNow(t))
	for _, m := range old {
		m.Close()
	}

	var logs bytes.Buffer
	o, migs := loadPinned(t, slog.New(slog.NewTextHandler(&logs, nil)), dir, pinnedConfig(nil, sizes))
	defer o.Close()
	if len(migs) != 0 {
		t.Errorf("maps of the current layout and size were migrated: %+v", migs)
	}
	for name, id := range ids {
		if got := mapIDOf(t, o.Maps[name]); got != id {
			t.Errorf("%s: the loader made map %d, want the pinned %d kept", name, got, id)
		}
	}
	if n := len(ctRows(t, o.Maps[maps.NameCT])); n != 20 {
		t.Errorf("glia_ct holds %d entries, want the 20 pinned", n)
	}
	rm, err := ebpf.LoadPinnedMap(filepath.Join(dir, maps.NameLayout), nil)
	must(t, err)
	defer rm.Close()
	recs, err := maps.NewLayoutRecords(rm).List()
	must(t, err)
	for name, id := range ids {
		if rec, ok := recs[id]; !ok || rec.Version != 1 {
			t.Errorf("%s (map %d): layout record %+v (found %t), want version 1", name, id, rec, ok)
		}
	}
	if strings.Contains(logs.String(), "level=WARN") || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("adopting current maps logged a warning:\n%s", logs.String())
	}
}

// Another size in the config: the map is migrated, not emptied; a smaller
// map keeps the newest flows and reports how many it lost.
func TestPrivilegedMigrateSize(t *testing.T) {
	requirePrivileged(t)
	dir := filepath.Join(privateBPFFS(t), "node1")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	sizes := datapath.MapSizes{LB: 1000, CT: 2048, NAT: 4096}
	o, _ := loadPinned(t, log, dir, pinnedConfig(nil, sizes))
	now := monoNow(t)
	fillCT(t, maps.NewCT(o.Maps[maps.NameCT]), 500, now)
	before := ctRows(t, o.Maps[maps.NameCT])
	must(t, maps.NewNAT(o.Maps[maps.NameNAT]).Update(tuple(podA, world, 50000, 80, maps.ProtoTCP, maps.DirNATEgress),
		maps.NATEntry{LastSeen: now, ToAddr: maps.IPv4From(netip.MustParseAddr(nodeIP)), ToPort: maps.PortFrom(50000)}))
	lbID := mapIDOf(t, o.Maps[maps.NameServices])
	o.Close()

	// Bigger: every entry carried over.
	sizes.CT = 8192
	o, migs := loadPinned(t, log, dir, pinnedConfig(nil, sizes))
	if got := o.Maps[maps.NameCT].MaxEntries(); got != 8192 {
		t.Fatalf("glia_ct has %d entries, want 8192", got)
	}
	if d := cmp.Diff(before, ctRows(t, o.Maps[maps.NameCT])); d != "" {
		t.Errorf("glia_ct entries after the migration (-before +after):\n%s", d)
	}
	want := []maps.Migration{{Map: maps.NameCT, Action: "migrated", FromVersion: 1, ToVersion: 1, FromMax: 2048, ToMax: 8192,
		Carried: 1000, Reason: "it has 2048 entries and the config asks for 8192"}}
	if d := cmp.Diff(want, migs); d != "" {
		t.Errorf("migration reports (-want +got):\n%s", d)
	}
	if got := mapIDOf(t, o.Maps[maps.NameServices]); got != lbID {
		t.Errorf("glia_services was replaced (map %d, was %d) although its size did not change", got, lbID)
	}
	if got, want := pinnedID(t, filepath.Join(dir, maps.NameCT)), mapIDOf(t, o.Maps[maps.NameCT]); got != want {
		t.Errorf("the pin glia_ct is map %d, want the new map %d", got, want)
	}
	if s := swapPins(t, dir); len(s) != 0 {
		t.Errorf("old maps left pinned after the migration: %v", s)
	}
	if !strings.Contains(logs.String(), "Migrated a pinned map: every entry carried over") || !strings.Contains(logs.String(), "entries-carried=1000") {
		t.Errorf("the migration is not in the log:\n%s", logs.String())
	}
	o.Close()

	// Smaller than what it holds: the newest flows stay, the rest is
	// reported lost, in entries and in flows.
	logs.Reset()
	sizes.CT = 256
	o, migs = loadPinned(t, log, dir, pinnedConfig(nil, sizes))
	defer o.Close()
	if len(migs) != 1 || migs[0].Map != maps.NameCT || migs[0].Lost == 0 || migs[0].Carried+migs[0].Lost != 1000 ||
		migs[0].FlowsLost != (migs[0].Lost+1)/2 {
		t.Fatalf("shrinking glia_ct to 256 entries: report %+v, want entries carried + lost = 1000, flows lost = lost/2", migs)
	}
	rows := ctRows(t, o.Maps[maps.NameCT])
	if len(rows) != migs[0].Carried {
		t.Errorf("glia_ct holds %d entries, the report says %d carried", len(rows), migs[0].Carried)
	}
	oldest := now + 500
	for _, r := range rows {
		oldest = min(oldest, r.Entry.LastSeen)
	}
	if oldest < now+250 {
		t.Errorf("the oldest flow kept was last seen at +%d, want only the newest (from +250)", oldest-now)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "map=glia_ct") ||
		!strings.Contains(logs.String(), "entries-lost=") {
		t.Errorf("the loss is not reported in the log:\n%s", logs.String())
	}
}

// A map of an older layout is converted entry by entry, and the programs
// of this version find the converted entries: the reply of a flow the old
// programs tracked is still reverse-translated.
func TestPrivilegedMigrateOldLayout(t *testing.T) {
	requirePrivileged(t)
	// The flow, tracked by this version's programs (unpinned), as the
	// source of realistic entries.
	e := newEnv(t, FlagKPR, false)
	e.services(svc("UDP", vip+":53", 0, podFar+":5353"))
	_, f, _ := e.run(e.o.FromContainer, udpPkt(podA, vip, 5000, 53))
	if f.Dst != podFar {
		t.Fatalf("request went to %s, want the backend %s", f.Dst, podFar)
	}
	tracked := ctRows(t, e.o.Maps[maps.NameCT])
	if len(tracked) != 2 {
		t.Fatalf("the flow has %d CT entries, want 2: %v", len(tracked), tracked)
	}

	for _, tc := range []struct {
		name   string
		record bool // the old map has a layout record (else its version is inferred)
	}{{"recorded", true}, {"inferred", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(privateBPFFS(t), "node1")
			reg := testRegistry(ctV1To2)
			sizes := datapath.MapSizes{LB: 1000, CT: 2048, NAT: 4096}
			o, _ := loadPinned(t, testLogger(), dir, pinnedConfig(reg, sizes))
			o.Close()
			// glia_ct replaced by a map of layout 1, holding the flow.
			must(t, os.Remove(filepath.Join(dir, maps.NameCT)))
			old, err := ebpf.NewMap(&ebpf.MapSpec{Name: maps.NameCT, Type: ebpf.LRUHash, KeySize: 16, ValueSize: ctV1ValueSize, MaxEntries: 2048})
			must(t, err)
			defer old.Close()
			must(t, old.Pin(filepath.Join(dir, maps.NameCT)))
			for _, r := range tracked {
				var k, v bytes.Buffer
				must(t, binary.Write(&k, binary.NativeEndian, r.Key))
				must(t, binary.Write(&v, binary.NativeEndian, r.Entry))
				must(t, maps.WriteRaw(old, maps.RawEntry{Key: k.Bytes(), Value: ctV2To1(v.Bytes())}, ebpf.UpdateAny))
			}
			if tc.record {
				rm, err := ebpf.LoadPinnedMap(filepath.Join(dir, maps.NameLayout), nil)
				must(t, err)
				must(t, maps.NewLayoutRecords(rm).Set(mapIDOf(t, old), maps.LayoutRecord{Version: 1, Compat: 1}))
				rm.Close()
			}

			o, migs := loadPinned(t, testLogger(), dir, pinnedConfig(reg, sizes))
			defer o.Close()
			want := []maps.Migration{{Map: maps.NameCT, Action: "migrated", FromVersion: 1, ToVersion: 2, FromMax: 2048, ToMax: 2048,
				Carried: 2, Reason: "layout version 1 → 2"}}
			if d := cmp.Diff(want, migs); d != "" {
				t.Errorf("migration reports (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tracked, ctRows(t, o.Maps[maps.NameCT])); d != "" {
				t.Errorf("converted entries (-tracked +migrated):\n%s", d)
			}
			// This version's programs on the migrated maps: the backend's
			// reply is translated back to the frontend.
			m := &env{t: t, o: o, lb: newLBWriter(maps.NewServices(o.Maps[maps.NameServices]), maps.NewBackends(o.Maps[maps.NameBackends]),
				maps.NewSlots(o.Maps[maps.NameSvcSlots]), maps.NewSlots(o.Maps[maps.NameMaglev]), false)}
			m.lb.affinity = maps.NewAffinity(o.Maps[maps.NameAffinity])
			m.services(svc("UDP", vip+":53", 0, podFar+":5353"))
			ret, f, _ := m.run(o.FromNetdev, udpPkt(podFar, podA, 5353, 5000))
			check(t, "reply after the migration", ret, tcOK, f, flow{Src: vip, Dst: podA, SPort: 53, DPort: 5000, Proto: protoUDP})
			ret, f, _ = m.run(o.FromContainer, udpPkt(podA, vip, 5000, 53))
			check(t, "request after the migration", ret, tcOK, f, flow{Src: podA, Dst: podFar, SPort: 5000, DPort: 5353, Proto: protoUDP})
		})
	}
}

// A layout the loader cannot migrate is replaced by an empty map, and
// the loss is an explicit event: an error log line naming the map and
// the entries and flows lost, and a report.
func TestPrivilegedMigrateUnmigratable(t *testing.T) {
	requirePrivileged(t)
	for _, tc := range []struct {
		name string
		reg  maps.Registry
		old  *ebpf.MapSpec
		rec  *maps.LayoutRecord
		why  string
	}{
		{"unknown definition", nil, &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 16, ValueSize: 40, MaxEntries: 2048}, nil,
			"matches no layout of glia_ct this glia knows"},
		{"no converter", testRegistry(nil), &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 16, ValueSize: ctV1ValueSize, MaxEntries: 2048},
			&maps.LayoutRecord{Version: 1, Compat: 1}, "cannot be converted from version 1"},
		{"record disagrees", nil, &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 16, ValueSize: 40, MaxEntries: 2048},
			&maps.LayoutRecord{Version: 1, Compat: 1}, "its record says layout version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(privateBPFFS(t), "node1")
			sizes := datapath.MapSizes{LB: 1000, CT: 2048, NAT: 4096}
			o, _ := loadPinned(t, testLogger(), dir, pinnedConfig(tc.reg, sizes))
			o.Close()
			must(t, os.Remove(filepath.Join(dir, maps.NameCT)))
			spec := tc.old.Copy()
			spec.Name = maps.NameCT
			old, err := ebpf.NewMap(spec)
			must(t, err)
			defer old.Close()
			must(t, old.Pin(filepath.Join(dir, maps.NameCT)))
			for i := range 5 {
				k, v := make([]byte, spec.KeySize), make([]byte, spec.ValueSize)
				k[0] = byte(i)
				must(t, maps.WriteRaw(old, maps.RawEntry{Key: k, Value: v}, ebpf.UpdateAny))
			}
			if tc.rec != nil {
				rm, err := ebpf.LoadPinnedMap(filepath.Join(dir, maps.NameLayout), nil)
				must(t, err)
				must(t, maps.NewLayoutRecords(rm).Set(mapIDOf(t, old), *tc.rec))
				rm.Close()
			}

			var logs bytes.Buffer
			o, migs := loadPinned(t, slog.New(slog.NewTextHandler(&logs, nil)), dir, pinnedConfig(tc.reg, sizes))
			defer o.Close()
			if len(migs) != 1 || migs[0].Action != "reset" || migs[0].Lost != 5 || migs[0].FlowsLost != 3 || !strings.Contains(migs[0].Reason, tc.why) {
				t.Fatalf("report %+v, want glia_ct reset with 5 entries (3 flows) lost because %q", migs, tc.why)
			}
			if n := len(ctRows(t, o.Maps[maps.NameCT])); n != 0 {
				t.Errorf("the new glia_ct holds %d entries, want an empty map", n)
			}
			line := ""
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "level=ERROR") && strings.Contains(l, "map=glia_ct") {
					line = l
				}
			}
			if !strings.Contains(line, "entries-lost=5") || !strings.Contains(line, "flows-lost=3") {
				t.Errorf("no error line naming glia_ct and the 5 entries (3 flows) lost:\n%s", logs.String())
			}
		})
	}
}

// A map of a newer layout: refused (nothing changes) unless the newer
// layout says this version may use it as it is.
func TestPrivilegedMigrateNewerLayout(t *testing.T) {
	requirePrivileged(t)
	for _, tc := range []struct {
		name   string
		rec    maps.LayoutRecord
		refuse bool
	}{
		{"incompatible", maps.LayoutRecord{Version: 3, Compat: 2}, true},
		{"compatible", maps.LayoutRecord{Version: 2, Compat: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(privateBPFFS(t), "node1")
			sizes := datapath.MapSizes{LB: 1000, CT: 2048, NAT: 4096}
			o, _ := loadPinned(t, testLogger(), dir, pinnedConfig(nil, sizes))
			fillCT(t, maps.NewCT(o.Maps[maps.NameCT]), 3, monoNow(t))
			ctID := mapIDOf(t, o.Maps[maps.NameCT])
			o.Close()
			rm, err := ebpf.LoadPinnedMap(filepath.Join(dir, maps.NameLayout), nil)
			must(t, err)
			must(t, maps.NewLayoutRecords(rm).Set(ctID, tc.rec))
			rm.Close()

			o, err = loadObjects(testLogger(), pinnedConfig(nil, sizes), dir)
			if tc.refuse {
				if err == nil {
					o.Close()
					t.Fatal("a map of a newer, incompatible layout was accepted")
				}
				for _, want := range []string{"glia_ct has layout version 3, newer than this glia's 1", "Refusing to start", dir} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("refusal %q does not say %q", err, want)
					}
				}
			} else {
				must(t, err)
				_, err = o.finish()
				must(t, err)
				defer o.Close()
			}
			if got := pinnedID(t, filepath.Join(dir, maps.NameCT)); got != ctID {
				t.Errorf("glia_ct is map %d now, want %d untouched", got, ctID)
			}
			m, err := ebpf.LoadPinnedMap(filepath.Join(dir, maps.NameCT), nil)
			must(t, err)
			defer m.Close()
			if n := len(ctRows(t, m)); n != 6 {
				t.Errorf("glia_ct holds %d entries, want the 6 it had", n)
			}
			if s := swapPins(t, dir); len(s) != 0 {
				t.Errorf("pins left: %v", s)
			}
		})
	}
}

// A start killed in the middle of a migration leaves pins the next start
// completes: killed before the exchange, the unfinished copy is dropped
// and made again; killed after it (the old map waiting under
// glia_ct_swap), what the old programs wrote since is merged.
func TestPrivilegedMigrateInterrupted(t *testing.T) {
	requirePrivileged(t)
	sizes := datapath.MapSizes{LB: 1000, CT: 2048, NAT: 4096}
	now := monoNow(t)
	t.Run("after the exchange", func(t *testing.T) {
		dir := filepath.Join(privateBPFFS(t), "node1")
		o, _ := loadPinned(t, testLogger(), dir, pinnedConfig(nil, sizes))
		fillCT(t, maps.NewCT(o.Maps[maps.NameCT]), 4, now)
		o.Close()
		// A start with a bigger CT, killed before finish (the programs
		// would have been attached next).
		sizes := sizes
		sizes.CT = 4096
		o, err := loadObjects(testLogger(), pinnedConfig(nil, sizes), dir)
		must(t, err)
		o.Close()
		if s := swapPins(t, dir); len(s) != 1 || s[0] != maps.NameCT+swapSuffix {
			t.Fatalf("pins after an interrupted start: %v, want the old map under %s", s, maps.NameCT+swapSuffix)
		}
		// The old programs still run on the old map: a new flow, and a
		// refresh of an old one.
		oldMap, err := ebpf.LoadPinnedMap(filepath.Join(dir, maps.NameCT+swapSuffix), nil)
		must(t, err)
		oldCT := maps.NewCT(oldMap)
		late := tuple(podA2, vip, 30000, 80, maps.ProtoTCP, maps.DirCTService)
		must(t, oldCT.Update(late, maps.CTEntry{LastSeen: now + 100, BackendID: 9}))
		refreshed := tuple(podA, vip, 20000, 80, maps.ProtoTCP, maps.DirCTService)
		e, _, err := oldCT.Lookup(refreshed)
		must(t, err)
		e.LastSeen, e.Flags = now+200, e.Flags|maps.CTFlagTxClosing
		must(t, oldCT.Update(refreshed, e))
		oldMap.Close()

		o, migs := loadPinned(t, testLogger(), dir, pinnedConfig(nil, sizes))
		defer o.Close()
		if len(migs) != 1 || migs[0].Action != "merged" || migs[0].Carried != 2 {
			t.Errorf("reports %+v, want the previous glia_ct merged, 2 entries", migs)
		}
		ct := maps.NewCT(o.Maps[maps.NameCT])
		if got, ok, _ := ct.Lookup(late); !ok || got.BackendID != 9 {
			t.Errorf("the flow the old programs added after the copy: %+v (found %t)", got, ok)
		}
		if got, _, _ := ct.Lookup(refreshed); got.LastSeen != now+200 || got.Flags&maps.CTFlagTxClosing == 0 {
			t.Errorf("the flow the old programs refreshed after the copy: %+v, want last seen +200 and closing", got)
		}
		if n := len(ctRows(t, o.Maps[maps.NameCT])); n != 9 {
			t.Errorf("glia_ct holds %d entries, want 8 + 1", n)
		}
		if s := swapPins(t, dir); len(s) != 0 {
			t.Errorf("pins left: %v", s)
		}
	})
	t.Run("before the exchange", func(t *testing.T) {
		dir := filepath.Join(privateBPFFS(t), "node1")
		o, _ := loadPinned(t, testLogger(), dir, pinnedConfig(nil, sizes))
		fillCT(t, maps.NewCT(o.Maps[maps.NameCT]), 4, now)
		o.Close()
		// An unfinished copy, as a start killed before the exchange leaves it.
		stale, err := ebpf.NewMap(&ebpf.MapSpec{Name: maps.NameCT, Type: ebpf.LRUHash, KeySize: 16, ValueSize: 32, MaxEntries: 4096})
		must(t, err)
		must(t, maps.NewCT(stale).Update(tuple(podA2, vip, 1, 80, maps.ProtoTCP, 0), maps.CTEntry{LastSeen: now}))
		must(t, stale.Pin(filepath.Join(dir, maps.NameCT+swapSuffix)))
		stale.Close()

		sizes := sizes
		sizes.CT = 4096
		o, migs := loadPinned(t, testLogger(), dir, pinnedConfig(nil, sizes))
		defer o.Close()
		if len(migs) != 1 || migs[0].Action != "migrated" || migs[0].Carried != 8 {
			t.Errorf("reports %+v, want glia_ct migrated with its 8 entries", migs)
		}
		if n := len(ctRows(t, o.Maps[maps.NameCT])); n != 8 {
			t.Errorf("glia_ct holds %d entries, want the 8 of the live map (not the unfinished copy's)", n)
		}
		if s := swapPins(t, dir); len(s) != 0 {
			t.Errorf("pins left: %v", s)
		}
	})
}

// A load that fails (here: a refusal of another map) changes no pin.
func TestPrivilegedMigrateRefusalChangesNothing(t *testing.T) {
	requirePrivileged(t)
	dir := filepath.Join(privateBPFFS(t), "node1")
	sizes := datapath.MapSizes{LB: 1000, CT: 2048, NAT: 4096}
	o, _ := loadPinned(t, testLogger(), dir, pinnedConfig(nil, sizes))
	ids := map[string]ebpf.MapID{}
	for name, m := range o.Maps {
		ids[name] = mapIDOf(t, m)
	}
	natID := ids[maps.NameNAT]
	o.Close()
	rm, err := ebpf.LoadPinnedMap(filepath.Join(dir, maps.NameLayout), nil)
	must(t, err)
	must(t, maps.NewLayoutRecords(rm).Set(natID, maps.LayoutRecord{Version: 5, Compat: 5}))
	rm.Close()
	// glia_ct would be migrated (another size), glia_nat is refused.
	sizes.CT = 4096
	_, err = loadObjects(testLogger(), pinnedConfig(nil, sizes), dir)
	if err == nil || !strings.Contains(err.Error(), "glia_nat has layout version 5") {
		t.Fatalf("load: %v, want glia_nat refused", err)
	}
	for name, id := range ids {
		if got := pinnedID(t, filepath.Join(dir, name)); got != id {
			t.Errorf("%s is map %d now, want %d untouched", name, got, id)
		}
	}
	if s := swapPins(t, dir); len(s) != 0 {
		t.Errorf("pins left: %v", s)
	}
	if errors.Is(err, os.ErrNotExist) {
		t.Errorf("refusal wraps a missing file: %v", err)
	}
}

// Every kind of map glia pins (hash, LRU, LPM trie, per-CPU array) is
// copied entry for entry.
func TestPrivilegedCopyEveryMap(t *testing.T) {
	requirePrivileged(t)
	spec, err := LoadFromContainer()
	must(t, err)
	reg := maps.Layouts()
	ncpu, err := ebpf.PossibleCPU()
	must(t, err)
	for name, ms := range spec.Maps {
		if !strings.HasPrefix(name, "glia_") || policyMaps[name] {
			continue // network policy's maps are policydp's: never migrated here
		}
		t.Run(name, func(t *testing.T) {
			ms := ms.Copy()
			ms.Pinning = ebpf.PinNone
			ms.MaxEntries = min(ms.MaxEntries, 64)
			from, err := ebpf.NewMap(ms)
			must(t, err)
			defer from.Close()
			to, err := ebpf.NewMap(ms)
			must(t, err)
			defer to.Close()
			vsize := int(ms.ValueSize)
			if isPerCPU(from) {
				vsize *= ncpu
			}
			for i := range 5 {
				k := make([]byte, ms.KeySize)
				switch ms.Type {
				case ebpf.LPMTrie:
					k[0], k[4], k[7] = 32, 198, byte(i)
				case ebpf.Array, ebpf.PerCPUArray:
					k[0] = byte(i)
				default:
					k[len(k)-1] = byte(i + 1)
				}
				v := make([]byte, vsize)
				for j := range v {
					v[j] = byte(i + j)
				}
				must(t, maps.WriteRaw(from, maps.RawEntry{Key: k, Value: v}, ebpf.UpdateAny))
			}
			l, _ := reg.Current(name)
			if _, _, err := copyEntries(from, to, nil, l, ms.ValueSize); err != nil {
				t.Fatal(err)
			}
			want, err := maps.ReadRaw(from)
			must(t, err)
			if len(want) < 5 {
				t.Fatalf("%s holds %d entries, want at least the 5 written", name, len(want))
			}
			got, err := maps.ReadRaw(to)
			must(t, err)
			sortRaw := func(es []maps.RawEntry) {
				sort.Slice(es, func(i, j int) bool { return bytes.Compare(es[i].Key, es[j].Key) < 0 })
			}
			sortRaw(want)
			sortRaw(got)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("copied entries (-from +to):\n%s", d)
			}
		})
	}
}
