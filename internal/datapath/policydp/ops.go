package policydp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/state"
)

// Drift reports an entry a refresh found changed (and repaired).
type Drift func(reconciler, object, what string)

// Reconciler names, as the agent registers them.
const (
	ReconcilerIPCache   = "policy-ipcache"
	ReconcilerPolicy    = "policy-entries"
	ReconcilerEndpoints = "policy-endpoints"
)

func addr4(a netip.Addr) uint32 {
	b := a.Unmap().As4()
	return binary.NativeEndian.Uint32(b[:])
}

// IPCacheKey is glia_ipcache's key of a prefix.
func IPCacheKey(p netip.Prefix) ToContainerIpcacheKey {
	return ToContainerIpcacheKey{Prefixlen: uint32(p.Bits()), Addr: p.Masked().Addr().Unmap().As4()}
}

// PolicyKey is glia_policy's key of an entry.
func PolicyKey(k state.PolicyKey) ToContainerPolicyKey {
	out := ToContainerPolicyKey{}
	binary.BigEndian.PutUint16(out.Data[0:2], k.PolicyID)
	out.Data[2] = k.Dir
	binary.BigEndian.PutUint32(out.Data[3:7], k.Identity)
	out.Data[7] = k.Proto
	binary.BigEndian.PutUint16(out.Data[8:10], k.Port)
	bits := 56 // policy, direction and peer
	if k.Proto != 0 {
		bits += 8 + int(k.PortBits)
	}
	out.Prefixlen = uint32(bits)
	return out
}

// IPCacheOps reconciles the ip-identities table into glia_ipcache.
type IPCacheOps struct {
	U     *Unit
	Drift Drift
	// IsNode says whether a /32 is a node's address (IPC_F_NODE).
	IsNode func(netip.Addr) bool
}

func (o IPCacheOps) value(e *state.IPIdentity) ToContainerIpcacheValue {
	v := ToContainerIpcacheValue{Identity: e.Identity}
	if e.Prefix.Bits() == 32 && o.IsNode != nil && o.IsNode(e.Prefix.Addr()) {
		v.Flags |= ipcFlagNode
	}
	return v
}

// Update implements reconciler.Operations.
func (o IPCacheOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *state.IPIdentity) error {
	return write(o.U, MapIPCache, IPCacheKey(e.Prefix), o.value(e), func(have ToContainerIpcacheValue, ok bool) {
		if ok && e.Status.Kind == reconciler.StatusKindRefreshing && o.Drift != nil {
			o.Drift(ReconcilerIPCache, e.Prefix.String(), fmt.Sprintf("had identity %d", have.Identity))
		}
	})
}

// Delete implements reconciler.Operations.
func (o IPCacheOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *state.IPIdentity) error {
	return o.U.remove(MapIPCache, IPCacheKey(e.Prefix))
}

// Prune implements reconciler.Operations.
func (o IPCacheOps) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*state.IPIdentity, statedb.Revision]) error {
	want := map[ToContainerIpcacheKey]bool{}
	for e := range objs {
		want[IPCacheKey(e.Prefix)] = true
	}
	return prune[ToContainerIpcacheKey, ToContainerIpcacheValue](o.U, MapIPCache, func(k ToContainerIpcacheKey) bool { return want[k] })
}

// PolicyOps reconciles the policy-entries table into glia_policy.
type PolicyOps struct {
	U     *Unit
	Drift Drift
}

// Update implements reconciler.Operations.
func (o PolicyOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *state.PolicyEntry) error {
	return write(o.U, MapPolicy, PolicyKey(e.Key), ToContainerPolicyValue{Rule: e.RuleRef}, func(_ ToContainerPolicyValue, ok bool) {
		if e.Status.Kind == reconciler.StatusKindRefreshing && o.Drift != nil {
			o.Drift(ReconcilerPolicy, e.Key.String(), "was missing or changed")
		}
	})
}

// Delete implements reconciler.Operations.
func (o PolicyOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *state.PolicyEntry) error {
	return o.U.remove(MapPolicy, PolicyKey(e.Key))
}

// Prune implements reconciler.Operations.
func (o PolicyOps) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*state.PolicyEntry, statedb.Revision]) error {
	want := map[ToContainerPolicyKey]bool{}
	for e := range objs {
		want[PolicyKey(e.Key)] = true
	}
	return prune[ToContainerPolicyKey, ToContainerPolicyValue](o.U, MapPolicy, func(k ToContainerPolicyKey) bool { return want[k] })
}

// EndpointOps reconciles the endpoint-policies table: glia_ep_policy, and
// the programs on each endpoint's interface.
type EndpointOps struct {
	U     *Unit
	Drift Drift
}

func epKey(a netip.Addr) ToContainerEpPolicyKey { return ToContainerEpPolicyKey{Addr: addr4(a)} }

// Update implements reconciler.Operations: the map entry first (the
// programs deny an endpoint without one), then the programs.
func (o EndpointOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *state.EndpointPolicy) error {
	u := o.U
	v := ToContainerEpPolicy{Policy: e.PolicyID, Flags: e.Flags}
	if err := write(u, MapEP, epKey(e.IP), v, func(have ToContainerEpPolicy, ok bool) {
		if e.Status.Kind == reconciler.StatusKindRefreshing && o.Drift != nil {
			o.Drift(ReconcilerEndpoints, e.IP.String(), "its policy entry was missing or changed")
		}
	}); err != nil {
		return err
	}
	if e.HostIfName == "" {
		return nil
	}
	l, err := netlinksafe.LinkByName(e.HostIfName)
	if err != nil {
		return fmt.Errorf("endpoint %s: interface %s: %w", e.IP, e.HostIfName, err)
	}
	idx := l.Attrs().Index
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.progs == nil {
		return errors.New("policy datapath not initialised")
	}
	if err := u.attach(attachment{prog: ProgToContainer, ifname: e.HostIfName, ifindex: idx, egress: true}); err != nil {
		return err
	}
	from := attachment{prog: ProgFromCtr, ifname: e.HostIfName, ifindex: idx}
	if u.cfg.Legacy {
		return u.attach(from)
	}
	return u.detach(from)
}

// Delete implements reconciler.Operations.
func (o EndpointOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, e *state.EndpointPolicy) error {
	u := o.U
	err := u.remove(MapEP, epKey(e.IP))
	u.mu.Lock()
	defer u.mu.Unlock()
	var idx int
	if l, lerr := netlinksafe.LinkByName(e.HostIfName); lerr == nil {
		idx = l.Attrs().Index
	}
	for _, a := range []attachment{{prog: ProgToContainer, ifname: e.HostIfName, ifindex: idx, egress: true},
		{prog: ProgFromCtr, ifname: e.HostIfName, ifindex: idx}} {
		err = errors.Join(err, u.detach(a))
	}
	return err
}

// Prune implements reconciler.Operations: entries and links of endpoints
// the table no longer holds.
func (o EndpointOps) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*state.EndpointPolicy, statedb.Revision]) error {
	u := o.U
	want := map[ToContainerEpPolicyKey]bool{}
	ifs := map[string]bool{}
	for e := range objs {
		want[epKey(e.IP)] = true
		ifs[e.HostIfName] = true
	}
	err := prune[ToContainerEpPolicyKey, ToContainerEpPolicy](u, MapEP, func(k ToContainerEpPolicyKey) bool { return want[k] })
	u.mu.Lock()
	defer u.mu.Unlock()
	ents, rerr := os.ReadDir(u.linksDir)
	if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return errors.Join(err, rerr)
	}
	for _, ent := range ents {
		a, ok := parsePin(ent.Name())
		if !ok || a.prog == ProgToNetdev || (ifs[a.ifname] && (a.prog == ProgToContainer || u.cfg.Legacy)) {
			continue
		}
		err = errors.Join(err, u.detach(a))
	}
	return err
}

// write puts k → v into the named map when it differs, telling seen what
// was there, and bumps the revision when it wrote.
func write[K comparable, V comparable](u *Unit, name string, k K, v V, seen func(V, bool)) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := u.maps[name]
	if m == nil {
		return errors.New("policy datapath not initialised")
	}
	var have V
	err := m.Lookup(&k, &have)
	found := err == nil
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if found && have == v {
		return nil
	}
	seen(have, found)
	if err := m.Update(&k, &v, ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("%s is full (%d entries, its compiled size): fewer NetworkPolicies, label sets or ipBlocks must be in use", name, m.MaxEntries())
		}
		return fmt.Errorf("update %s: %w", name, err)
	}
	return u.bump()
}

// remove deletes k from the named map and bumps the revision.
func (u *Unit) remove(name string, k any) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := u.maps[name]
	if m == nil {
		return errors.New("policy datapath not initialised")
	}
	if err := m.Delete(k); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		return fmt.Errorf("delete from %s: %w", name, err)
	}
	return u.bump()
}

// prune deletes every key of the named map keep refuses.
func prune[K comparable, V any](u *Unit, name string, keep func(K) bool) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := u.maps[name]
	if m == nil {
		return errors.New("policy datapath not initialised")
	}
	var (
		k    K
		gone []K
	)
	it := m.Iterate()
	var v V
	for it.Next(&k, &v) {
		if !keep(k) {
			gone = append(gone, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate %s: %w", name, err)
	}
	for _, g := range gone {
		if err := m.Delete(&g); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", name, err)
		}
	}
	if len(gone) > 0 {
		u.log.Info("Removed policy map entries nothing wants", "map", name, "count", len(gone))
		return u.bump()
	}
	return nil
}
