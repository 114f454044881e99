package bpf

import (
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"sort"

	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

// The two generations of slot entries a service alternates between: new
// slots are written in the generation not in use, then the service entry
// flips to it in one map update, then the old generation is deleted. A
// reader never sees a half-written set of backends.
const generationB = 1 << 31

// lbOps counts the map entries the writer read, wrote and deleted, so
// tests and benchmarks can check that a change touches only what changed.
type lbOps struct {
	Reads, Writes, Deletes int
}

// lbWriter programs services and backends into the maps. It keeps what it
// wrote in memory (rebuilt from the pinned maps by restore), so a change
// costs map operations for the entries that differ only: a sync never
// reads a map back.
//
// Ownership: every frontend belongs to the Service ("namespace/name")
// whose ports produced it. Frontends restored from the maps have no owner
// until a full sync names them (or removes them). Two Services claiming
// one frontend: the smaller key wins, the other's claim takes over when
// the winner lets go.
//
// Backends are reference-counted by the frontends whose entry keeps them
// (active, not ready and terminating backends alike): a backend entry is
// written before the first frontend that needs it, and deleted after the
// last frontend that had it no longer does. Service and backend ids are
// handed out in increasing order and wrap around only at 2^32, so a CT
// entry of a removed backend does not resolve to an unrelated one soon.
type lbWriter struct {
	services *maps.Services
	backends *maps.Backends
	slots    *maps.Slots
	maglev   *maps.Slots
	affinity *maps.Affinity // nil: not pruned (tests without the map)
	maglevOn bool

	nextSvcID     uint32
	nextBackendID uint32

	fes     map[maps.SvcKey]*feState // frontends in the maps
	svcIDs  map[uint32]bool          // ids of fes (and ids being written)
	bes     map[backendKey]*beState  // backends in the maps
	beByID  map[uint32]backendKey    // ... by id
	desired map[string][]frontend    // per Service, as last applied
	owners  map[maps.SvcKey][]string // Services claiming a frontend, sorted
	orphans map[maps.SvcKey]bool     // restored frontends no Service claimed yet
	retry   map[maps.SvcKey]bool     // frontends whose last change failed
	stale   map[uint32]bool          // backend ids whose delete failed
	held    []backendKey             // references restore holds until the first full sync
	heldIDs []uint32                 // duplicate backend entries restore found

	// newFrontend, when set, is called just before a frontend's entry is
	// written for the first time, its backends' entries in place: the
	// handover seeds the flows kube-proxy balanced to it (handover.go).
	newFrontend func(k maps.SvcKey, val maps.SvcValue)

	ops lbOps
}

func newLBWriter(services *maps.Services, backends *maps.Backends, slots, maglev *maps.Slots, maglevOn bool) *lbWriter {
	w := &lbWriter{services: services, backends: backends, slots: slots, maglev: maglev, maglevOn: maglevOn}
	w.reset()
	return w
}

func (w *lbWriter) reset() {
	w.nextSvcID, w.nextBackendID = 1, 1
	w.fes = map[maps.SvcKey]*feState{}
	w.svcIDs = map[uint32]bool{}
	w.bes = map[backendKey]*beState{}
	w.beByID = map[uint32]backendKey{}
	w.desired = map[string][]frontend{}
	w.owners = map[maps.SvcKey][]string{}
	w.orphans = map[maps.SvcKey]bool{}
	w.retry = map[maps.SvcKey]bool{}
	w.stale = map[uint32]bool{}
	w.held, w.heldIDs = nil, nil
}

type backendKey struct {
	addr  maps.IPv4
	port  maps.Port
	proto uint8
}

func (b backendKey) String() string {
	return maps.ProtoName(b.proto) + "/" + netip.AddrPortFrom(b.addr.Addr(), b.port.Uint16()).String()
}

// frontend is what one Service port wants programmed at one key.
type frontend struct {
	key      maps.SvcKey
	active   []backendKey // receive new connections; sorted
	refs     []backendKey // keep their entry (active, not ready, terminating); sorted
	affinity bool
}

// feState is a frontend as it is in the maps.
type feState struct {
	val    maps.SvcValue
	active []backendKey // what its slots point at; sorted
	refs   []backendKey // the backend references it holds
	dirty  bool         // its slots are not known to match active: rewrite
}

type beState struct {
	id   uint32
	refs int
}

// frontendsFor turns the frontends of one Service into the frontends of
// the maps, sorted by key; a key given twice takes the later port.
func frontendsFor(name state.ServiceName, fes []state.Frontend) ([]frontend, error) {
	var (
		out  []frontend
		errs []error
	)
	add := func(f frontend) {
		for i := range out {
			if out[i].key == f.key {
				out[i] = f
				return
			}
		}
		out = append(out, f)
	}
	for _, s := range fes {
		proto, err := maps.ProtoNumber(s.Protocol)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", name, err))
			continue
		}
		if !s.Addr.Addr().Is4() {
			continue // IPv4 only
		}
		var active, refs []backendKey
		for _, b := range s.Backends {
			if !b.Addr.Addr().Is4() {
				continue
			}
			bk := backendKey{maps.IPv4From(b.Addr.Addr()), maps.PortFrom(b.Addr.Port()), proto}
			// Terminating backends keep their established flows
			// (their entry stays) but get no new ones.
			refs = append(refs, bk)
			if b.Ready && !b.Terminating {
				active = append(active, bk)
			}
		}
		active, refs = sortedSet(active), sortedSet(refs)
		add(frontend{
			key:    maps.SvcKey{Addr: maps.IPv4From(s.Addr.Addr()), Port: maps.PortFrom(s.Addr.Port()), Proto: proto, Scope: maps.ScopeClusterIP},
			active: active, refs: refs, affinity: s.SessionAffinity,
		})
		if s.NodePort != 0 {
			add(frontend{
				key:    maps.SvcKey{Port: maps.PortFrom(s.NodePort), Proto: proto, Scope: maps.ScopeNodePort},
				active: active, refs: refs, affinity: s.SessionAffinity,
			})
		}
	}
	slices.SortFunc(out, func(a, b frontend) int { return cmpSvcKey(a.key, b.key) })
	return out, errors.Join(errs...)
}

func sortedSet(bs []backendKey) []backendKey {
	slices.SortFunc(bs, cmpBackend)
	return slices.Compact(bs)
}

func cmpBackend(a, b backendKey) int {
	switch {
	case a == b:
		return 0
	case lessBackend(a, b):
		return -1
	}
	return 1
}

func cmpSvcKey(a, b maps.SvcKey) int {
	switch {
	case a == b:
		return 0
	case a.Less(b):
		return -1
	}
	return 1
}

func lessBackend(a, b backendKey) bool {
	if a.addr != b.addr {
		return a.addr.Addr().Less(b.addr.Addr())
	}
	if a.port != b.port {
		return a.port.Uint16() < b.port.Uint16()
	}
	return a.proto < b.proto
}

func frontendsEqual(a, b []frontend) bool {
	return slices.EqualFunc(a, b, func(x, y frontend) bool {
		return x.key == y.key && x.affinity == y.affinity && slices.Equal(x.active, y.active) && slices.Equal(x.refs, y.refs)
	})
}

// sync makes the maps hold exactly svcs (every Service), writing only
// what differs from what they hold: a Service given as it was last time
// costs a comparison and no map operation. It also removes the frontends
// restore found that no Service claims, and lets go of the backends
// restore held.
func (w *lbWriter) sync(svcs iter.Seq[*state.Service]) error {
	changes := map[string][]frontend{}
	var errs []error
	for s := range svcs {
		fronts, err := frontendsFor(s.Name, s.Frontends)
		errs = append(errs, err)
		changes[s.Name.String()] = fronts
	}
	for key := range w.desired {
		if _, ok := changes[key]; !ok {
			changes[key] = nil
		}
	}
	return errors.Join(append(errs, w.apply(changes, true))...)
}

// update applies one Service only: its frontends become exactly fes (none:
// removed). Frontends of other Services are untouched, and its cost is
// that of the change.
func (w *lbWriter) update(name state.ServiceName, fes []state.Frontend) error {
	fronts, err := frontendsFor(name, fes)
	return errors.Join(err, w.apply(map[string][]frontend{name.String(): fronts}, false))
}

// change is one frontend to (re)write or to re-reference.
type change struct {
	key   maps.SvcKey
	want  frontend
	fe    *feState // nil: new
	write bool     // slots and entry; otherwise references only
}

// apply makes the frontends of the Services in changes what they map to,
// retries frontends that failed before and, with full, removes restored
// frontends no Service claims and lets go of the backends restore held.
func (w *lbWriter) apply(changes map[string][]frontend, full bool) error {
	var errs []error
	affected := map[maps.SvcKey]bool{}
	for k := range w.retry {
		affected[k] = true
	}
	clear(w.retry)
	for s, fronts := range changes {
		old := w.desired[s]
		if frontendsEqual(old, fronts) {
			continue
		}
		for _, f := range old {
			affected[f.key] = true
			w.disown(f.key, s)
		}
		for _, f := range fronts {
			affected[f.key] = true
			w.own(f.key, s)
		}
		if len(fronts) == 0 {
			delete(w.desired, s)
		} else {
			w.desired[s] = fronts
		}
	}
	if full {
		for k := range w.orphans {
			affected[k] = true
		}
	}
	errs = append(errs, w.retryStale())

	// 1. The backends each frontend needs, before any slot points at one.
	var todo []change
	var gone []maps.SvcKey
	for k := range affected {
		want, owned := w.want(k)
		fe := w.fes[k]
		if !owned {
			if fe != nil && (full || !w.orphans[k]) {
				gone = append(gone, k)
			}
			continue
		}
		delete(w.orphans, k)
		c := change{key: k, want: want, fe: fe, write: true}
		if fe != nil {
			c.write = fe.dirty || fe.val.Flags != w.flagsOf(want) || !slices.Equal(fe.active, want.active)
			if !c.write && slices.Equal(fe.refs, want.refs) {
				continue
			}
		}
		if err := w.acquire(want.refs); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", k, err))
			w.retry[k] = true
			continue
		}
		todo = append(todo, c)
	}
	slices.SortFunc(todo, func(a, b change) int { return cmpSvcKey(a.key, b.key) })

	// 2. Each frontend: slots of the next generation, then the entry,
	// then the old generation; then the backends it no longer needs.
	prune := map[uint32][]uint32{} // affinity: service id -> backends that stay
	for _, c := range todo {
		fe := c.fe
		var old feState
		if fe != nil {
			old = *fe
		}
		if c.write {
			val, committed, err := w.writeFrontend(c.key, c.want, fe)
			if err != nil {
				errs = append(errs, err)
			}
			if !committed {
				errs = append(errs, w.release(c.want.refs))
				w.retry[c.key] = true
				continue
			}
			if fe == nil {
				fe = &feState{}
				w.fes[c.key] = fe
			}
			fe.val, fe.active, fe.dirty = val, c.want.active, false
		}
		fe.refs = c.want.refs
		if c.fe != nil {
			errs = append(errs, w.release(old.refs))
			// Session affinity only to backends still taking new
			// connections of the service.
			if old.val.Flags&maps.SvcFlagAffinity != 0 {
				switch {
				case fe.val.Flags&maps.SvcFlagAffinity == 0:
					prune[old.val.ID] = nil
				case lostAny(old.active, fe.active):
					prune[old.val.ID] = w.ids(fe.active)
				}
			}
		}
	}

	// 3. Frontends that are gone: entry first, then its slots.
	slices.SortFunc(gone, cmpSvcKey)
	for _, k := range gone {
		fe := w.fes[k]
		if err := w.services.Delete(k); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", k, err))
			w.retry[k] = true
			continue
		}
		w.ops.Deletes++
		errs = append(errs, w.deleteSlots(fe.val), w.release(fe.refs))
		delete(w.fes, k)
		delete(w.svcIDs, fe.val.ID)
		delete(w.orphans, k)
		if fe.val.Flags&maps.SvcFlagAffinity != 0 {
			prune[fe.val.ID] = nil
		}
	}

	// 4. After a full sync, what restore kept for it goes if unused.
	if full && (w.held != nil || w.heldIDs != nil) {
		errs = append(errs, w.release(w.held))
		for _, id := range w.heldIDs {
			if err := w.backends.Delete(id); err != nil {
				w.stale[id] = true
				errs = append(errs, err)
			}
			w.ops.Deletes++
		}
		w.held, w.heldIDs = nil, nil
	}

	// 5. Affinity of clients to backends their service no longer offers.
	if len(prune) > 0 {
		errs = append(errs, w.pruneAffinity(func(svc, backend uint32) bool {
			keep, ok := prune[svc]
			return !ok || slices.Contains(keep, backend)
		}))
	}
	return errors.Join(errs...)
}

func (w *lbWriter) own(k maps.SvcKey, svc string) {
	o := w.owners[k]
	if i, found := slices.BinarySearch(o, svc); !found {
		w.owners[k] = slices.Insert(o, i, svc)
	}
}

func (w *lbWriter) disown(k maps.SvcKey, svc string) {
	o := w.owners[k]
	if i, found := slices.BinarySearch(o, svc); found {
		o = slices.Delete(o, i, i+1)
	}
	if len(o) == 0 {
		delete(w.owners, k)
	} else {
		w.owners[k] = o
	}
}

// want is what frontend k should be, if any Service claims it.
func (w *lbWriter) want(k maps.SvcKey) (frontend, bool) {
	o := w.owners[k]
	if len(o) == 0 {
		return frontend{}, false
	}
	for _, f := range w.desired[o[0]] {
		if f.key == k {
			return f, true
		}
	}
	return frontend{}, false
}

func (w *lbWriter) flagsOf(f frontend) uint16 {
	var flags uint16
	if w.maglevOn {
		flags |= maps.SvcFlagMaglev
	}
	if f.affinity {
		flags |= maps.SvcFlagAffinity
	}
	return flags
}

// lostAny says whether a backend of old is not in cur (both sorted).
func lostAny(old, cur []backendKey) bool {
	for _, b := range old {
		if _, found := slices.BinarySearchFunc(cur, b, cmpBackend); !found {
			return true
		}
	}
	return false
}

func (w *lbWriter) ids(bs []backendKey) []uint32 {
	out := make([]uint32, len(bs))
	for i, b := range bs {
		out[i] = w.bes[b].id
	}
	return out
}

// allocID hands out the next id not in use, wrapping around at 2^32.
func allocID(next *uint32, inUse int, used func(uint32) bool) (uint32, error) {
	for range inUse + 2 {
		id := *next
		*next++
		if *next == 0 {
			*next = 1
		}
		if id != 0 && !used(id) {
			return id, nil
		}
	}
	return 0, errors.New("no free id")
}

// acquire takes a reference on each backend, writing the entry of those
// no frontend had yet. On error it holds none of them.
func (w *lbWriter) acquire(refs []backendKey) error {
	for i, bk := range refs {
		if b := w.bes[bk]; b != nil {
			b.refs++
			continue
		}
		id, err := allocID(&w.nextBackendID, len(w.beByID)+len(w.stale)+len(w.heldIDs), func(id uint32) bool {
			_, ok := w.beByID[id]
			return ok || w.stale[id] || slices.Contains(w.heldIDs, id)
		})
		if err == nil {
			err = w.backends.Update(id, maps.Backend{Addr: bk.addr, Port: bk.port, Proto: bk.proto})
			w.ops.Writes++
		}
		if err != nil {
			return errors.Join(fmt.Errorf("backend %s: %w", bk, err), w.release(refs[:i]))
		}
		w.bes[bk] = &beState{id: id, refs: 1}
		w.beByID[id] = bk
	}
	return nil
}

// release drops a reference on each backend, deleting the entry of those
// no frontend needs any more.
func (w *lbWriter) release(refs []backendKey) error {
	var errs []error
	for _, bk := range refs {
		b := w.bes[bk]
		if b == nil {
			continue
		}
		if b.refs--; b.refs > 0 {
			continue
		}
		delete(w.bes, bk)
		delete(w.beByID, b.id)
		w.ops.Deletes++
		if err := w.backends.Delete(b.id); err != nil {
			w.stale[b.id] = true
			errs = append(errs, fmt.Errorf("backend %s: %w", bk, err))
		}
	}
	return errors.Join(errs...)
}

// retryStale deletes the backends a failed delete left.
func (w *lbWriter) retryStale() error {
	var errs []error
	for id := range w.stale {
		w.ops.Deletes++
		if err := w.backends.Delete(id); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(w.stale, id)
	}
	return errors.Join(errs...)
}

// writeFrontend writes f's slots in the generation fe does not use, flips
// the entry to them and deletes fe's generation. committed says whether
// the entry now points at the new slots.
func (w *lbWriter) writeFrontend(k maps.SvcKey, f frontend, fe *feState) (val maps.SvcValue, committed bool, err error) {
	ids := w.ids(f.active)
	val = maps.SvcValue{Count: uint16(len(ids)), Flags: w.flagsOf(f)}
	if fe != nil {
		val.ID = fe.val.ID
		val.SlotBase = fe.val.SlotBase ^ generationB
	} else {
		if val.ID, err = allocID(&w.nextSvcID, len(w.svcIDs), func(id uint32) bool { return w.svcIDs[id] }); err != nil {
			return val, false, fmt.Errorf("service %s: %w", k, err)
		}
		w.svcIDs[val.ID] = true
	}
	val.RevNATID = val.ID
	fail := func(err error) (maps.SvcValue, bool, error) {
		err = errors.Join(err, w.deleteSlots(val))
		if fe == nil {
			delete(w.svcIDs, val.ID)
		}
		return val, false, fmt.Errorf("service %s: %w", k, err)
	}

	if len(ids) > 0 {
		if val.Flags&maps.SvcFlagMaglev != 0 {
			names := make([]string, len(f.active))
			for i, bk := range f.active {
				names[i] = netip.AddrPortFrom(bk.addr.Addr(), bk.port.Uint16()).String()
			}
			table := maglevTable(names, maps.MaglevM)
			slots := make([]uint32, len(table))
			for i, b := range table {
				slots[i] = ids[b]
			}
			w.ops.Writes += len(slots)
			if err := w.maglev.UpdateBatch(val.ID, val.SlotBase, slots); err != nil {
				return fail(err)
			}
		} else {
			w.ops.Writes += len(ids)
			if err := w.slots.UpdateBatch(val.ID, val.SlotBase+1, ids); err != nil {
				return fail(err)
			}
		}
	}
	if fe == nil && w.newFrontend != nil {
		w.newFrontend(k, val)
	}
	w.ops.Writes++
	if err := w.services.Update(k, val); err != nil {
		return fail(err)
	}
	if fe != nil {
		if err := w.deleteSlots(fe.val); err != nil {
			return val, true, fmt.Errorf("service %s: old backend slots: %w", k, err)
		}
	}
	return val, true, nil
}

// deleteSlots removes the slots of one generation of a service.
func (w *lbWriter) deleteSlots(v maps.SvcValue) error {
	if v.Count == 0 {
		return nil
	}
	if v.Flags&maps.SvcFlagMaglev != 0 {
		w.ops.Deletes += maps.MaglevM
		return w.maglev.DeleteBatch(v.ID, v.SlotBase, maps.MaglevM)
	}
	w.ops.Deletes += int(v.Count)
	return w.slots.DeleteBatch(v.ID, v.SlotBase+1, uint32(v.Count))
}

// pruneAffinity deletes the affinity entries keep refuses. It walks the
// whole affinity map: only done when an affine service lost backends,
// lost its affinity or went away.
func (w *lbWriter) pruneAffinity(keep func(svc, backend uint32) bool) error {
	if w.affinity == nil {
		return nil
	}
	entries, err := w.affinity.List()
	w.ops.Reads += len(entries)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !keep(e.Key.SvcID, e.Value.BackendID) {
			w.ops.Deletes++
			errs = append(errs, w.affinity.Delete(e.Key))
		}
	}
	return errors.Join(errs...)
}

// keepAffinity says whether an affinity entry matches what is written:
// an affine service whose slots offer the backend.
func (w *lbWriter) keepAffinity() func(svc, backend uint32) bool {
	offered := map[uint32][]uint32{}
	for _, fe := range w.fes {
		if fe.val.Flags&maps.SvcFlagAffinity != 0 {
			offered[fe.val.ID] = w.ids(fe.active)
		}
	}
	return func(svc, backend uint32) bool { return slices.Contains(offered[svc], backend) }
}

// restoreStats says what restore found in the maps.
type restoreStats struct {
	Frontends, Backends, Rewrite, StaleSlots int
}

// readMaps reads every service, backend and slot entry from the kernel.
func (w *lbWriter) readMaps() ([]maps.ServiceEntry, []maps.BackendEntry, map[slotRef]uint32, error) {
	svcs, err := w.services.List()
	if err != nil {
		return nil, nil, nil, err
	}
	bes, err := w.backends.List()
	if err != nil {
		return nil, nil, nil, err
	}
	slotIdx, err := w.slotIndex()
	if err != nil {
		return nil, nil, nil, err
	}
	w.ops.Reads += len(svcs) + len(bes)
	return svcs, bes, slotIdx, nil
}

// restore rebuilds the in-memory state from the maps a previous run
// left, keeping every id. Frontends whose slots do not match their entry
// are rewritten when a Service claims them; slots of no live generation
// are deleted. Every backend entry stays until the first full sync.
func (w *lbWriter) restore() (restoreStats, error) {
	w.reset()
	var st restoreStats
	svcs, bes, slotIdx, err := w.readMaps()
	if err != nil {
		return st, err
	}

	sort.Slice(bes, func(i, j int) bool { return bes[i].ID < bes[j].ID })
	for _, b := range bes {
		w.nextBackendID = max(w.nextBackendID, b.ID+1)
		bk := backendKey{b.Addr, b.Port, b.Proto}
		if _, dup := w.bes[bk]; dup {
			w.heldIDs = append(w.heldIDs, b.ID)
			continue
		}
		w.bes[bk] = &beState{id: b.ID, refs: 1}
		w.beByID[b.ID] = bk
		w.held = append(w.held, bk)
	}
	st.Backends = len(w.bes)

	used := map[maps.SlotKey]bool{}
	for _, s := range svcs {
		w.nextSvcID = max(w.nextSvcID, s.Value.ID+1)
		fe := &feState{val: s.Value}
		active, ok := w.slotBackends(s.Value, slotIdx)
		fe.dirty = !ok
		if ok {
			fe.active = active
			fe.refs = slices.Clone(active)
			for _, bk := range active {
				w.bes[bk].refs++
			}
		} else {
			st.Rewrite++
		}
		for _, k := range slotRange(s.Value) {
			used[k] = true
		}
		w.fes[s.Key] = fe
		w.svcIDs[s.Value.ID] = true
		w.orphans[s.Key] = true
	}
	st.Frontends = len(w.fes)

	// Slots of no live generation: what a crash between the flip and the
	// delete of the old generation left.
	var errs []error
	for k := range slotIdx {
		if used[k.SlotKey] {
			continue
		}
		st.StaleSlots++
		w.ops.Deletes++
		m := w.slots
		if k.maglev {
			m = w.maglev
		}
		errs = append(errs, m.Delete(k.SlotKey))
	}
	if w.affinity != nil {
		errs = append(errs, w.pruneAffinity(w.keepAffinity()))
	}
	return st, errors.Join(errs...)
}

// slotRef is a slot of either slot map.
type slotRef struct {
	maps.SlotKey
	maglev bool
}

func (w *lbWriter) slotIndex() (map[slotRef]uint32, error) {
	idx := map[slotRef]uint32{}
	for _, m := range []struct {
		s      *maps.Slots
		maglev bool
	}{{w.slots, false}, {w.maglev, true}} {
		entries, err := m.s.List()
		if err != nil {
			return nil, err
		}
		w.ops.Reads += len(entries)
		for _, e := range entries {
			idx[slotRef{e.Key, m.maglev}] = e.BackendID
		}
	}
	return idx, nil
}

// slotRange lists the slots generation v of a service uses.
func slotRange(v maps.SvcValue) []maps.SlotKey {
	if v.Count == 0 {
		return nil
	}
	first, n := v.SlotBase+1, uint32(v.Count)
	if v.Flags&maps.SvcFlagMaglev != 0 {
		first, n = v.SlotBase, maps.MaglevM
	}
	out := make([]maps.SlotKey, n)
	for i := range out {
		out[i] = maps.SlotKey{SvcID: v.ID, Slot: first + uint32(i)}
	}
	return out
}

// slotBackends reads the backends the slots of v point at, sorted; ok is
// false when a slot is missing, names an unknown backend, or the slots do
// not offer exactly Count backends.
func (w *lbWriter) slotBackends(v maps.SvcValue, idx map[slotRef]uint32) ([]backendKey, bool) {
	maglev := v.Flags&maps.SvcFlagMaglev != 0
	var out []backendKey
	for _, k := range slotRange(v) {
		id, ok := idx[slotRef{k, maglev}]
		if !ok {
			return nil, false
		}
		bk, ok := w.beByID[id]
		if !ok {
			return nil, false
		}
		out = append(out, bk)
	}
	out = sortedSet(out)
	if len(out) != int(v.Count) {
		return nil, false
	}
	return out, true
}

// verifyStats says what verify repaired.
type verifyStats struct {
	Services, Backends, Slots, Frontends int
}

func (s verifyStats) total() int { return s.Services + s.Backends + s.Slots + s.Frontends }

// verify compares the maps with what the writer wrote and repairs them:
// entries nobody wrote go, backends are rewritten, frontends whose entry
// or slots differ are rewritten. It reads every map: for a rare drift
// check, not for every sync.
func (w *lbWriter) verify() (verifyStats, error) {
	var st verifyStats
	var errs []error
	svcs, bes, slotIdx, err := w.readMaps()
	if err != nil {
		return st, err
	}

	inKernel := map[maps.SvcKey]bool{}
	for _, s := range svcs {
		fe := w.fes[s.Key]
		if fe == nil {
			st.Services++
			w.ops.Deletes++
			errs = append(errs, w.services.Delete(s.Key))
			continue
		}
		inKernel[s.Key] = true
		if fe.val != s.Value {
			fe.dirty = true
		}
	}
	for _, b := range bes {
		bk, ok := w.beByID[b.ID]
		if !ok && !w.stale[b.ID] && !slices.Contains(w.heldIDs, b.ID) {
			st.Backends++
			w.ops.Deletes++
			errs = append(errs, w.backends.Delete(b.ID))
			continue
		}
		if ok && bk != (backendKey{b.Addr, b.Port, b.Proto}) {
			st.Backends++
			w.ops.Writes++
			errs = append(errs, w.backends.Update(b.ID, maps.Backend{Addr: bk.addr, Port: bk.port, Proto: bk.proto}))
		}
	}
	have := map[uint32]bool{}
	for _, b := range bes {
		have[b.ID] = true
	}
	for id, bk := range w.beByID {
		if !have[id] {
			st.Backends++
			w.ops.Writes++
			errs = append(errs, w.backends.Update(id, maps.Backend{Addr: bk.addr, Port: bk.port, Proto: bk.proto}))
		}
	}

	used := map[maps.SlotKey]bool{}
	for k, fe := range w.fes {
		if !inKernel[k] {
			fe.dirty = true
		}
		if !fe.dirty {
			active, ok := w.slotBackends(fe.val, slotIdx)
			fe.dirty = !ok || !slices.Equal(active, fe.active)
		}
		for _, s := range slotRange(fe.val) {
			used[s] = true
		}
		if fe.dirty {
			st.Frontends++
			w.retry[k] = true
		}
	}
	for k := range slotIdx {
		if used[k.SlotKey] {
			continue
		}
		st.Slots++
		w.ops.Deletes++
		m := w.slots
		if k.maglev {
			m = w.maglev
		}
		errs = append(errs, m.Delete(k.SlotKey))
	}
	errs = append(errs, w.pruneAffinity(w.keepAffinity()))
	if len(w.retry) > 0 {
		errs = append(errs, w.apply(nil, false))
	}
	return st, errors.Join(errs...)
}
