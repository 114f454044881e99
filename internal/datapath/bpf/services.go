package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/maps"
)

// The two generations of slot entries a service alternates between: new
// slots are written in the generation not in use, then the service entry
// flips to it in one map update, then the old generation is deleted. A
// reader never sees a half-written set of backends.
const generationB = 1 << 31

// lbWriter programs services and backends into the maps.
type lbWriter struct {
	services *maps.Services
	backends *maps.Backends
	slots    *maps.Slots
	maglev   *maps.Slots
	affinity *maps.Affinity // nil: not pruned (tests without the map)
	maglevOn bool

	nextSvcID     uint32
	nextBackendID uint32
	// written remembers what was last programmed per frontend, so an
	// unchanged service is not rewritten.
	written map[maps.SvcKey]string
}

func newLBWriter(services *maps.Services, backends *maps.Backends, slots, maglev *maps.Slots, maglevOn bool) *lbWriter {
	return &lbWriter{services: services, backends: backends, slots: slots, maglev: maglev, maglevOn: maglevOn,
		nextSvcID: 1, nextBackendID: 1, written: map[maps.SvcKey]string{}}
}

type backendKey struct {
	addr  maps.IPv4
	port  maps.Port
	proto uint8
}

type frontend struct {
	key      maps.SvcKey
	active   []backendKey // receive new connections
	affinity bool
}

// sync makes the maps hold exactly svcs.
func (w *lbWriter) sync(svcs []datapath.Service) error {
	curSvcs, err := w.services.List()
	if err != nil {
		return err
	}
	curBackends, err := w.backends.List()
	if err != nil {
		return err
	}
	svcByKey := map[maps.SvcKey]maps.SvcValue{}
	for _, s := range curSvcs {
		svcByKey[s.Key] = s.Value
		w.nextSvcID = max(w.nextSvcID, s.Value.ID+1)
	}
	backendIDs := map[backendKey]uint32{}
	for _, b := range curBackends {
		backendIDs[backendKey{b.Addr, b.Port, b.Proto}] = b.ID
		w.nextBackendID = max(w.nextBackendID, b.ID+1)
	}

	// What we want.
	var fronts []frontend
	referenced := map[backendKey]bool{}
	for _, s := range svcs {
		proto, err := maps.ProtoNumber(s.Protocol)
		if err != nil {
			return fmt.Errorf("service %s/%s: %w", s.Namespace, s.Name, err)
		}
		if !s.Frontend.Addr().Is4() {
			continue // IPv4 only
		}
		var active []backendKey
		for _, b := range s.Backends {
			if !b.Addr.Addr().Is4() {
				continue
			}
			bk := backendKey{maps.IPv4From(b.Addr.Addr()), maps.PortFrom(b.Addr.Port()), proto}
			// Terminating backends keep their established flows
			// (their entry stays) but get no new ones.
			referenced[bk] = true
			if b.Ready && !b.Terminating {
				active = append(active, bk)
			}
		}
		sort.Slice(active, func(i, j int) bool { return lessBackend(active[i], active[j]) })
		fronts = append(fronts, frontend{
			key:    maps.SvcKey{Addr: maps.IPv4From(s.Frontend.Addr()), Port: maps.PortFrom(s.Frontend.Port()), Proto: proto, Scope: maps.ScopeClusterIP},
			active: active, affinity: s.SessionAffinity,
		})
		if s.NodePort != 0 {
			fronts = append(fronts, frontend{
				key:    maps.SvcKey{Port: maps.PortFrom(s.NodePort), Proto: proto, Scope: maps.ScopeNodePort},
				active: active, affinity: s.SessionAffinity,
			})
		}
	}

	// 1. Backends first, so every slot written below points at one.
	for bk := range referenced {
		if _, ok := backendIDs[bk]; ok {
			continue
		}
		id := w.nextBackendID
		w.nextBackendID++
		if err := w.backends.Update(id, maps.Backend{Addr: bk.addr, Port: bk.port, Proto: bk.proto}); err != nil {
			return err
		}
		backendIDs[bk] = id
	}

	// 2. Each frontend: slots of the next generation, then the entry.
	want := map[maps.SvcKey]bool{}
	var errs []error
	for _, f := range fronts {
		want[f.key] = true
		if err := w.writeFrontend(f, svcByKey, backendIDs); err != nil {
			errs = append(errs, err)
		}
	}

	// 3. Frontends that are gone: entry first, then its slots.
	for k, v := range svcByKey {
		if want[k] {
			continue
		}
		if err := w.services.Delete(k); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(w.written, k)
		errs = append(errs, w.deleteSlots(v))
	}

	// 4. Backends nobody references any more.
	for bk, id := range backendIDs {
		if !referenced[bk] {
			errs = append(errs, w.backends.Delete(id))
		}
	}

	// 5. Session affinity only to backends still taking new connections.
	errs = append(errs, w.pruneAffinity(fronts, backendIDs))
	return errors.Join(errs...)
}

// pruneAffinity deletes the affinity of clients whose backend no longer
// takes new connections of the service (gone, not ready, terminating), or
// whose service no longer has session affinity.
func (w *lbWriter) pruneAffinity(fronts []frontend, ids map[backendKey]uint32) error {
	if w.affinity == nil {
		return nil
	}
	svcs, err := w.services.List()
	if err != nil {
		return err
	}
	idOf := map[maps.SvcKey]uint32{}
	for _, s := range svcs {
		idOf[s.Key] = s.Value.ID
	}
	active := map[uint32]map[uint32]bool{} // service id -> backend ids
	for _, f := range fronts {
		id, ok := idOf[f.key]
		if !ok || !f.affinity {
			continue
		}
		set := map[uint32]bool{}
		for _, bk := range f.active {
			set[ids[bk]] = true
		}
		active[id] = set
	}
	entries, err := w.affinity.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !active[e.Key.SvcID][e.Value.BackendID] {
			errs = append(errs, w.affinity.Delete(e.Key))
		}
	}
	return errors.Join(errs...)
}

func lessBackend(a, b backendKey) bool {
	if a.addr != b.addr {
		return a.addr.Addr().Less(b.addr.Addr())
	}
	return a.port.Uint16() < b.port.Uint16()
}

func (w *lbWriter) writeFrontend(f frontend, cur map[maps.SvcKey]maps.SvcValue, ids map[backendKey]uint32) error {
	var flags uint16
	if w.maglevOn {
		flags |= maps.SvcFlagMaglev
	}
	if f.affinity {
		flags |= maps.SvcFlagAffinity
	}
	list := make([]uint32, len(f.active))
	names := make([]string, len(f.active))
	for i, bk := range f.active {
		list[i] = ids[bk]
		names[i] = netip.AddrPortFrom(bk.addr.Addr(), bk.port.Uint16()).String()
	}
	fingerprint := fmt.Sprint(flags, list)
	old, exists := cur[f.key]
	if exists && w.written[f.key] == fingerprint {
		return nil
	}

	val := maps.SvcValue{ID: w.nextSvcID, Count: uint16(len(list)), Flags: flags}
	if exists {
		val.ID = old.ID
		val.SlotBase = old.SlotBase ^ generationB
	} else {
		w.nextSvcID++
	}
	val.RevNATID = val.ID

	if len(list) > 0 {
		if flags&maps.SvcFlagMaglev != 0 {
			table := maglevTable(names, maps.MaglevM)
			slots := make([]uint32, len(table))
			for i, b := range table {
				slots[i] = list[b]
			}
			if err := w.maglev.UpdateBatch(val.ID, val.SlotBase, slots); err != nil {
				return fmt.Errorf("service %s: %w", f.key, err)
			}
		} else {
			if err := w.slots.UpdateBatch(val.ID, val.SlotBase+1, list); err != nil {
				return fmt.Errorf("service %s: %w", f.key, err)
			}
		}
	}
	if err := w.services.Update(f.key, val); err != nil {
		return fmt.Errorf("service %s: %w", f.key, err)
	}
	w.written[f.key] = fingerprint
	if exists {
		return w.deleteSlots(old)
	}
	return nil
}

// deleteSlots removes the slots of one generation of a service.
func (w *lbWriter) deleteSlots(v maps.SvcValue) error {
	var errs []error
	if v.Flags&maps.SvcFlagMaglev != 0 {
		for i := uint32(0); i < maps.MaglevM; i++ {
			if err := w.maglev.Delete(maps.SlotKey{SvcID: v.ID, Slot: v.SlotBase + i}); err != nil {
				errs = append(errs, err)
				break
			}
		}
	} else {
		for i := uint32(1); i <= uint32(v.Count); i++ {
			if err := w.slots.Delete(maps.SlotKey{SvcID: v.ID, Slot: v.SlotBase + i}); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	return errors.Join(errs...)
}
