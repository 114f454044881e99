package bpf

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

// lbSnapshot is the content of the maps the LB writer programs.
type lbSnapshot struct {
	Services map[maps.SvcKey]maps.SvcValue
	Backends map[uint32]maps.Backend
	Slots    map[maps.SlotKey]uint32
	Maglev   map[maps.SlotKey]uint32
	Affinity map[maps.AffinityKey]uint32
}

func snapshot(t *testing.T, o *objects) lbSnapshot {
	t.Helper()
	s := lbSnapshot{Services: map[maps.SvcKey]maps.SvcValue{}, Backends: map[uint32]maps.Backend{},
		Slots: map[maps.SlotKey]uint32{}, Maglev: map[maps.SlotKey]uint32{}, Affinity: map[maps.AffinityKey]uint32{}}
	svcs, err := maps.NewServices(o.Maps[maps.NameServices]).List()
	must(t, err)
	for _, e := range svcs {
		s.Services[e.Key] = e.Value
	}
	bes, err := maps.NewBackends(o.Maps[maps.NameBackends]).List()
	must(t, err)
	for _, e := range bes {
		s.Backends[e.ID] = e.Backend
	}
	for name, into := range map[string]map[maps.SlotKey]uint32{maps.NameSvcSlots: s.Slots, maps.NameMaglev: s.Maglev} {
		slots, err := maps.NewSlots(o.Maps[name]).List()
		must(t, err)
		for _, e := range slots {
			into[e.Key] = e.BackendID
		}
	}
	aff, err := maps.NewAffinity(o.Maps[maps.NameAffinity]).List()
	must(t, err)
	for _, e := range aff {
		s.Affinity[e.Key] = e.Value.BackendID
	}
	return s
}

// changedEntries lists what differs between two snapshots: frontends,
// backend ids and the service ids of slots.
func changedEntries(a, b lbSnapshot) (svcs map[maps.SvcKey]bool, backends, slotSvcs map[uint32]bool) {
	svcs, backends, slotSvcs = map[maps.SvcKey]bool{}, map[uint32]bool{}, map[uint32]bool{}
	for k := range union(a.Services, b.Services) {
		if a.Services[k] != b.Services[k] {
			svcs[k] = true
		}
	}
	for k := range union(a.Backends, b.Backends) {
		if a.Backends[k] != b.Backends[k] {
			backends[k] = true
		}
	}
	for _, m := range [][2]map[maps.SlotKey]uint32{{a.Slots, b.Slots}, {a.Maglev, b.Maglev}} {
		for k := range union(m[0], m[1]) {
			x, inX := m[0][k]
			y, inY := m[1][k]
			if x != y || inX != inY {
				slotSvcs[k.SvcID] = true
			}
		}
	}
	return svcs, backends, slotSvcs
}

func union[K comparable, V any](a, b map[K]V) map[K]bool {
	out := map[K]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func clusterIPKey(s svcPort) maps.SvcKey {
	p, _ := maps.ProtoNumber(s.Protocol)
	return maps.SvcKey{Addr: maps.IPv4From(s.Frontend.Addr()), Port: maps.PortFrom(s.Frontend.Port()), Proto: p}
}

func byService(svcs ...svcPort) map[string][]svcPort {
	out := map[string][]svcPort{}
	for _, s := range svcs {
		out[s.ServiceKey()] = append(out[s.ServiceKey()], s)
	}
	return out
}

// checkConsistent checks the writer's memory against the maps: every
// frontend and backend it remembers is there with the same value, and
// nothing else is.
func checkConsistent(t *testing.T, w *lbWriter, snap lbSnapshot) {
	t.Helper()
	wantSvcs := map[maps.SvcKey]maps.SvcValue{}
	for k, fe := range w.fes {
		wantSvcs[k] = fe.val
	}
	if d := cmp.Diff(wantSvcs, snap.Services); d != "" {
		t.Errorf("services map vs memory (-memory +map):\n%s", d)
	}
	wantBes := map[uint32]maps.Backend{}
	for bk, b := range w.bes {
		wantBes[b.id] = maps.Backend{Addr: bk.addr, Port: bk.port, Proto: bk.proto}
	}
	if d := cmp.Diff(wantBes, snap.Backends); d != "" {
		t.Errorf("backends map vs memory (-memory +map):\n%s", d)
	}
	refs := map[backendKey]int{}
	for _, fe := range w.fes {
		for _, bk := range fe.refs {
			refs[bk]++
		}
	}
	for _, bk := range w.held {
		refs[bk]++
	}
	for bk, b := range w.bes {
		if b.refs != refs[bk] {
			t.Errorf("backend %s: refcount %d, held by %d", bk, b.refs, refs[bk])
		}
	}
}

func TestLBUpdateOneTouchesOnlyIt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maglev bool
		n      int
	}{
		{"random-10k", false, 10_000},
		// the maglev map holds 262144 slots: 256 tables of 1021
		{"maglev-200", true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, FlagKPR, tc.maglev)
			svcs := benchServices(tc.n)
			e.services(svcs...)
			before := snapshot(t, e.o)
			checkConsistent(t, e.lb, before)

			// one backend replaced by another
			target := svcs[tc.n/2]
			target.Backends = []state.Backend{target.Backends[0],
				{Addr: netip.MustParseAddrPort("198.19.250.1:9090"), Ready: true}}
			e.lb.ops = lbOps{}
			must(t, e.lb.updatePorts(byService(target)))
			ops := e.lb.ops

			after := snapshot(t, e.o)
			checkConsistent(t, e.lb, after)
			svcKeys, bes, slotSvcs := changedEntries(before, after)
			key := clusterIPKey(target)
			id := after.Services[key].ID
			oldIDs := map[uint32]bool{}
			for _, s := range []map[maps.SlotKey]uint32{before.Slots, before.Maglev} {
				for k, b := range s {
					if k.SvcID == id {
						oldIDs[b] = true
					}
				}
			}
			if d := cmp.Diff(map[maps.SvcKey]bool{key: true}, svcKeys); d != "" {
				t.Errorf("frontends changed (-want +got):\n%s", d)
			}
			if d := cmp.Diff(map[uint32]bool{id: true}, slotSvcs); d != "" {
				t.Errorf("slots of services changed (-want +got):\n%s", d)
			}
			// The removed backend went if no other service had it, the
			// new one came, nothing else moved.
			usedElsewhere := map[uint32]bool{}
			for _, s := range []map[maps.SlotKey]uint32{before.Slots, before.Maglev} {
				for k, b := range s {
					if k.SvcID != id {
						usedElsewhere[b] = true
					}
				}
			}
			removed := 0
			for b := range bes {
				_, was := before.Backends[b]
				_, is := after.Backends[b]
				switch {
				case was && !is && (!oldIDs[b] || usedElsewhere[b]):
					t.Errorf("backend %d removed, but it was not the service's alone", b)
				case was && !is:
					removed++
				case is && !was && after.Backends[b].AddrPort().String() != "198.19.250.1:9090":
					t.Errorf("backend %d added: %v", b, after.Backends[b])
				case was && is:
					t.Errorf("backend %d rewritten", b)
				}
			}
			if len(bes)-removed != 1 {
				t.Errorf("backend entries changed: %v, want the added one and the removed ones", bes)
			}
			// Slots: new generation (2, or a table) + entry + the old
			// generation's deletes + a backend in, the removed out.
			slots := 2
			if tc.maglev {
				slots = maps.MaglevM
			}
			if want := (lbOps{Writes: slots + 1 + 1, Deletes: slots + removed}); ops != want {
				t.Errorf("map operations %+v, want %+v", ops, want)
			}

			// the same again: nothing to do
			e.lb.ops = lbOps{}
			must(t, e.lb.updatePorts(byService(target)))
			if e.lb.ops != (lbOps{}) {
				t.Errorf("repeating the update made map operations: %+v", e.lb.ops)
			}
		})
	}
}

func TestLBUpdateRemovesService(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	shared := podFar + ":8080"
	only := "198.19.3.40:8080"
	a := svc("TCP", vip+":80", 30080, shared, only)
	a.Name, a.SessionAffinity = "a", true
	b := svc("TCP", "198.18.128.11:80", 0, shared)
	b.Name = "b"
	e.services(a, b)

	// a client of a gets affinity to one of its backends
	_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, 40000, 80, tcpSYN))
	if f.Dst != podFar && f.Dst != "198.19.3.40" {
		t.Fatalf("connection to a went to %s", f.Dst)
	}
	before := snapshot(t, e.o)
	if len(before.Affinity) != 1 {
		t.Fatalf("affinity entries %v, want one", before.Affinity)
	}
	aID := before.Services[clusterIPKey(a)].ID
	var onlyID, sharedID uint32
	for id, be := range before.Backends {
		switch be.AddrPort().String() {
		case only:
			onlyID = id
		case shared:
			sharedID = id
		}
	}

	must(t, e.lb.updatePorts(map[string][]svcPort{a.ServiceKey(): nil}))
	after := snapshot(t, e.o)
	checkConsistent(t, e.lb, after)
	want := lbSnapshot{
		Services: map[maps.SvcKey]maps.SvcValue{clusterIPKey(b): before.Services[clusterIPKey(b)]},
		Backends: map[uint32]maps.Backend{sharedID: before.Backends[sharedID]},
		Slots:    map[maps.SlotKey]uint32{},
		Maglev:   map[maps.SlotKey]uint32{},
		Affinity: map[maps.AffinityKey]uint32{},
	}
	for k, v := range before.Slots {
		if k.SvcID != aID && k.SvcID != before.Services[maps.SvcKey{Port: maps.PortFrom(30080), Proto: maps.ProtoTCP, Scope: maps.ScopeNodePort}].ID {
			want.Slots[k] = v
		}
	}
	if d := cmp.Diff(want, after); d != "" {
		t.Errorf("maps after removing a (-want +got):\n%s", d)
	}
	if _, ok := e.lb.beByID[onlyID]; ok {
		t.Errorf("backend id %d of the removed service still in use", onlyID)
	}

	// the service id and the freed backend id are not handed out again
	c := svc("TCP", "198.18.128.12:80", 0, "198.19.3.41:8080")
	c.Name = "c"
	must(t, e.lb.updatePorts(byService(c)))
	after = snapshot(t, e.o)
	if id := after.Services[clusterIPKey(c)].ID; id == aID {
		t.Errorf("new service got the removed one's id %d", id)
	}
	if _, ok := after.Backends[onlyID]; ok {
		t.Errorf("new backend got the removed one's id %d", onlyID)
	}
	// a connection to b still works, one to a is no longer load-balanced
	if _, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, "198.18.128.11", 40001, 80, tcpSYN)); f.Dst != podFar {
		t.Errorf("connection to b went to %s", f.Dst)
	}
	if _, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, 40002, 80, tcpSYN)); f.Dst != vip {
		t.Errorf("connection to the removed a went to %s", f.Dst)
	}
}

func TestLBSyncAfterUpdateWritesNothing(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	svcs := benchServices(1000)
	// a NodePort, affinity and a terminating backend, to compare too
	svcs[3].NodePort = 30003
	svcs[4].SessionAffinity = true
	svcs[5].Backends = append(svcs[5].Backends, state.Backend{Addr: netip.MustParseAddrPort("198.19.250.5:80"), Terminating: true})
	e.services(svcs...)

	changes := []func(){
		func() { svcs[7].Backends = svcs[7].Backends[:1] },
		func() { svcs[8].Backends[0].Terminating = true },
		func() { svcs[3].NodePort = 30004 },
		func() { svcs[9].SessionAffinity = true },
	}
	for i, change := range changes {
		before := fmt.Sprint(svcs)
		change()
		if before == fmt.Sprint(svcs) {
			t.Fatalf("change %d changed nothing", i)
		}
		e.lb.ops = lbOps{}
		must(t, e.lb.updatePorts(byService(svcs[3], svcs[7], svcs[8], svcs[9])))
		if e.lb.ops.Writes == 0 || e.lb.ops.Reads != 0 {
			t.Errorf("change %d: update made map operations %+v, want writes and no reads", i, e.lb.ops)
		}
		e.lb.ops = lbOps{}
		must(t, e.lb.syncPorts(svcs))
		if e.lb.ops != (lbOps{}) {
			t.Errorf("change %d: sync of the state the update made made map operations: %+v", i, e.lb.ops)
		}
	}
	checkConsistent(t, e.lb, snapshot(t, e.o))
}

func TestLBRestore(t *testing.T) {
	for _, maglev := range []bool{false, true} {
		t.Run(map[bool]string{false: "random", true: "maglev"}[maglev], func(t *testing.T) {
			e := newEnv(t, FlagKPR, maglev)
			svcs := benchServices(50)
			svcs[1].NodePort = 30001
			svcs[2].SessionAffinity = true
			svcs[3].Backends = append(svcs[3].Backends, state.Backend{Addr: netip.MustParseAddrPort("198.19.250.3:80"), Terminating: true})
			svcs[4].Backends = nil
			e.services(svcs...)
			// a client with affinity to svcs[2]
			vip2 := svcs[2].Frontend
			e.run(e.o.FromContainer, tcpPkt(podA, vip2.Addr().String(), 40000, vip2.Port(), tcpSYN))
			before := snapshot(t, e.o)
			if len(before.Affinity) != 1 {
				t.Fatalf("affinity %v, want one entry", before.Affinity)
			}

			// the agent restarts: a new writer on the same maps
			restart := func() *lbWriter {
				w := newLBWriter(e.lb.services, e.lb.backends, e.lb.slots, e.lb.maglev, maglev)
				w.affinity = e.lb.affinity
				st, err := w.restore()
				must(t, err)
				if st.Frontends != 51 || st.Rewrite != 0 || st.StaleSlots != 0 {
					t.Errorf("restore found %+v, want 51 frontends to keep as they are", st)
				}
				if w.ops.Writes+w.ops.Deletes != 0 {
					t.Errorf("restore changed the maps: %+v", w.ops)
				}
				w.ops = lbOps{}
				return w
			}
			e.lb = restart()
			must(t, e.lb.syncPorts(svcs))
			if e.lb.ops != (lbOps{}) {
				t.Errorf("sync of the same state after a restart made map operations: %+v", e.lb.ops)
			}
			if d := cmp.Diff(before, snapshot(t, e.o)); d != "" {
				t.Errorf("maps changed across the restart (-before +after):\n%s", d)
			}
			checkConsistent(t, e.lb, before)

			// restart again, then the terminating backend goes: its
			// entry goes with it (restore held it until the sync said
			// which Service has it)
			e.lb = restart()
			svcs[3].Backends = svcs[3].Backends[:2]
			must(t, e.lb.syncPorts(svcs))
			after := snapshot(t, e.o)
			checkConsistent(t, e.lb, after)
			_, bes, slotSvcs := changedEntries(before, after)
			if len(bes) != 1 || len(slotSvcs) != 0 {
				t.Errorf("changed backends %v and slots of %v, want only the terminating backend removed", bes, slotSvcs)
			}
			for id := range bes {
				if before.Backends[id].AddrPort().String() != "198.19.250.3:80" {
					t.Errorf("backend %v removed", before.Backends[id])
				}
			}
		})
	}
}

func TestLBRestoreRepairs(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	svcs := benchServices(20)
	e.services(svcs...)
	before := snapshot(t, e.o)
	id5 := before.Services[clusterIPKey(svcs[5])].ID
	id6 := before.Services[clusterIPKey(svcs[6])].ID
	// a crash left the old generation of svcs[5] and half of svcs[6]
	must(t, e.lb.slots.Update(maps.SlotKey{SvcID: id5, Slot: before.Services[clusterIPKey(svcs[5])].SlotBase ^ generationB + 1}, 1))
	must(t, e.lb.slots.Delete(maps.SlotKey{SvcID: id6, Slot: before.Services[clusterIPKey(svcs[6])].SlotBase + 2}))

	w := newLBWriter(e.lb.services, e.lb.backends, e.lb.slots, e.lb.maglev, false)
	w.affinity = e.lb.affinity
	st, err := w.restore()
	must(t, err)
	if d := cmp.Diff(restoreStats{Frontends: 20, Backends: 21, Rewrite: 1, StaleSlots: 1}, st); d != "" {
		t.Errorf("restore (-want +got):\n%s", d)
	}
	w.ops = lbOps{}
	must(t, w.syncPorts(svcs))
	// svcs[6] rewritten in its other generation: 2 slots, the entry,
	// the one slot left of the old generation
	if want := (lbOps{Writes: 3, Deletes: 2}); w.ops != want {
		t.Errorf("map operations %+v, want %+v", w.ops, want)
	}
	after := snapshot(t, e.o)
	checkConsistent(t, w, after)
	svcKeys, bes, slotSvcs := changedEntries(before, after)
	if d := cmp.Diff(map[maps.SvcKey]bool{clusterIPKey(svcs[6]): true}, svcKeys); d != "" || len(bes) != 0 || len(slotSvcs) != 1 {
		t.Errorf("changed frontends (-want +got) %s, backends %v, slots %v", d, bes, slotSvcs)
	}
}

func TestLBVerifyRepairsDrift(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	svcs := benchServices(20)
	e.services(svcs...)
	before := snapshot(t, e.o)

	// nothing drifted: nothing to do
	st, err := e.lb.verify()
	must(t, err)
	if st.total() != 0 {
		t.Errorf("verify of untouched maps repaired %+v", st)
	}

	// someone deletes a backend and a slot, and adds a frontend
	k3 := clusterIPKey(svcs[3])
	var victim uint32
	for k, b := range before.Slots {
		if k.SvcID == before.Services[clusterIPKey(svcs[8])].ID {
			victim = b
		}
	}
	must(t, e.lb.backends.Delete(victim))
	must(t, e.lb.slots.Delete(maps.SlotKey{SvcID: before.Services[k3].ID, Slot: before.Services[k3].SlotBase + 1}))
	stray := maps.SvcKey{Addr: maps.IPv4{198, 18, 200, 1}, Port: maps.PortFrom(80), Proto: maps.ProtoTCP}
	must(t, e.lb.services.Update(stray, maps.SvcValue{ID: 9999}))

	st, err = e.lb.verify()
	must(t, err)
	if d := cmp.Diff(verifyStats{Services: 1, Backends: 1, Frontends: 1}, st); d != "" {
		t.Errorf("repairs (-want +got):\n%s", d)
	}
	after := snapshot(t, e.o)
	checkConsistent(t, e.lb, after)
	svcKeys, bes, _ := changedEntries(before, after)
	if d := cmp.Diff(map[maps.SvcKey]bool{k3: true}, svcKeys); d != "" || len(bes) != 0 {
		t.Errorf("after repair: frontends changed (-want +got) %s, backends %v", d, bes)
	}
	st, err = e.lb.verify()
	must(t, err)
	if st.total() != 0 {
		t.Errorf("second verify repaired %+v", st)
	}
}

func TestLBFrontendClaimedTwice(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	a := svc("TCP", vip+":80", 0, podFar+":8080")
	a.Name = "a"
	b := svc("TCP", vip+":80", 0, podLocal+":8080")
	b.Name = "b"
	port := uint16(40000)
	dst := func() string {
		t.Helper()
		port++ // a new flow each time
		_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, port, 80, tcpSYN))
		return f.Dst
	}
	must(t, e.lb.updatePorts(byService(b)))
	must(t, e.lb.updatePorts(byService(a)))
	if got := dst(); got != podFar {
		t.Errorf("with a and b claiming the frontend it went to %s, want a's backend", got)
	}
	must(t, e.lb.updatePorts(map[string][]svcPort{a.ServiceKey(): nil}))
	if got := dst(); got != podLocal {
		t.Errorf("after a let go it went to %s, want b's backend", got)
	}
	checkConsistent(t, e.lb, snapshot(t, e.o))
}
