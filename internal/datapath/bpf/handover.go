package bpf

// The handover of established flows between the kernel's connection
// tracking (iptables MASQUERADE, kube-proxy's DNAT) and glia's CT and NAT
// maps, when a node switches between the legacy and the eBPF datapath, or
// between iptables and eBPF masquerading, or turns kube-proxy replacement
// on or off.
//
// Why this mechanism: each side translates a flow by its own table, and a
// flow survives the switch only if the side taking over translates it as
// the other did — the same source port to the outside world, the same
// backend. Both tables can be read and written from user space: the
// kernel's through ctnetlink, glia's as maps. So the agent copies each
// established flow's translation across before the side taking over can
// see its packets:
//
//   - takeover (kernel -> glia): before the programs that translate are
//     attached, the kernel's table is dumped and every masqueraded flow of
//     a local pod becomes a NAT entry pair with the kernel's port, every
//     flow an outside host opened to a local pod a CT_INBOUND entry (its
//     replies are not masqueraded), and every flow kube-proxy DNATed to a
//     Service becomes a CT entry pair with the kernel's backend — written
//     just before that Service's frontend is (its backend ids exist only
//     then), with the client's session affinity. A second pass after the
//     attach catches flows opened in between.
//   - handback (glia -> kernel): before the iptables rule or kube-proxy
//     takes a flow (and again before the programs are detached), every
//     live translation of glia's maps becomes a kernel conntrack entry set
//     up by the kernel's own NAT core (CTA_NAT_SRC/CTA_NAT_DST), so
//     MASQUERADE and kube-proxy continue it: an established entry is never
//     matched against their rules again.
//   - both ways, connection tracking is made liberal first
//     (linux.ConntrackLiberal): a flow's packets take turns through the
//     stack and past it during a switch, and a kernel entry whose window
//     fell behind would otherwise take the next segment as INVALID, leave
//     it untranslated and have it answered with a reset.
//
// Every step is idempotent and state lives in the two tables themselves:
// seeds are written only where glia has no entry, kernel entries only
// where the kernel has none (or has one without the translation), so an
// agent killed at any point redoes the step at its next start. What owned
// the translations last is recorded (handover.json in the datapath state
// dir, written atomically once a step is complete), so a restart without
// a switch copies nothing. The alternative — programs that ask the
// kernel's conntrack (bpf_skb_ct_lookup) about flows they do not know —
// would tie the datapath to the nf_conntrack module and its structures,
// and would not help the way back at all.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"glia.dev/glia/internal/atomicfile"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/maps"
)

// dirCTInbound is CT_INBOUND of bpf/lib/maps.h: a flow a host outside the
// cluster opened to a local pod, keyed in the pod's direction.
const dirCTInbound = 2

// ctFlagNodePort is CT_F_NODEPORT.
const ctFlagNodePort = maps.CTFlagNodePort

// tcpFlagACK is the ACK bit of the TCP flags a CT entry records as seen.
const tcpFlagACK = 0x10

// Owners of the translations of established flows, as handover.json
// records them.
const (
	OwnerKernel = "kernel"
	OwnerBPF    = "bpf"
)

// Owners says which side translated the established flows of a node in
// its last completed step: masquerading (and the flows outside hosts
// opened to pods, which masquerading must leave alone) and Services.
type Owners struct {
	Masquerade string `json:"masquerade"`
	Services   string `json:"services"`
}

// ownersFile is the record under the datapath state dir.
const ownersFile = "handover.json"

// ReadOwners reads the record; a node without one (a first start, or an
// agent from before the record) counts as the kernel's on both counts:
// taking over what the kernel does not translate copies nothing.
func ReadOwners(stateDir string) (Owners, error) {
	o := Owners{Masquerade: OwnerKernel, Services: OwnerKernel}
	if stateDir == "" {
		return o, nil
	}
	b, err := os.ReadFile(filepath.Join(stateDir, ownersFile))
	if errors.Is(err, os.ErrNotExist) {
		return o, nil
	}
	if err != nil {
		return o, fmt.Errorf("read handover record: %w", err)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return o, fmt.Errorf("handover record %s: %w", filepath.Join(stateDir, ownersFile), err)
	}
	return o, nil
}

// WriteOwners records o atomically.
func WriteOwners(stateDir string, o Owners) error {
	if stateDir == "" {
		return nil
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(stateDir, ownersFile), b, 0o600); err != nil {
		return fmt.Errorf("write handover record: %w", err)
	}
	return nil
}

// handoverNet is what decides which flows belong to the node.
type handoverNet struct {
	nodeIP      netip.Addr
	podCIDR     netip.Prefix
	clusterCIDR netip.Prefix
}

func netOf(n datapath.LocalNode) handoverNet {
	return handoverNet{nodeIP: n.IP, podCIDR: n.PodCIDR.Masked(), clusterCIDR: n.ClusterCIDR.Masked()}
}

func (n handoverNet) localPod(a netip.Addr) bool { return n.podCIDR.Contains(a) }
func (n handoverNet) outside(a netip.Addr) bool  { return !n.clusterCIDR.Contains(a) }

func tupleOf(src, dst netip.AddrPort, proto, dir uint8) maps.Tuple {
	return maps.Tuple{SAddr: maps.IPv4From(src.Addr()), DAddr: maps.IPv4From(dst.Addr()),
		SPort: maps.PortFrom(src.Port()), DPort: maps.PortFrom(dst.Port()), Proto: proto, Dir: dir}
}

func addrPort(a maps.IPv4, p maps.Port) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr(), p.Uint16())
}

// seededFlags are the state bits of an established flow: seen both ways,
// and for TCP past its handshake.
func seededFlags(proto uint8) uint16 {
	f := uint16(maps.CTFlagTracked | maps.CTFlagSeenReply)
	if proto == maps.ProtoTCP {
		f |= maps.CTFlagSeenNonSyn
	}
	return f
}

func seenTCP(proto uint8) uint8 {
	if proto == maps.ProtoTCP {
		return tcpFlagACK
	}
	return 0
}

// natPair is a masqueraded (or NodePort-SNATed) flow as glia's NAT map
// holds it: the entry of the original direction and that of its replies.
type natPair struct {
	egress, ingress maps.NATRow
}

func newNATPair(proto uint8, orig, remote, to netip.AddrPort, now uint64) natPair {
	f := seededFlags(proto)
	return natPair{
		egress: maps.NATRow{Key: tupleOf(orig, remote, proto, maps.DirNATEgress),
			Entry: maps.NATEntry{LastSeen: now, ToAddr: maps.IPv4From(to.Addr()), ToPort: maps.PortFrom(to.Port()), Flags: f}},
		ingress: maps.NATRow{Key: tupleOf(remote, to, proto, maps.DirNATReply),
			Entry: maps.NATEntry{LastSeen: now, ToAddr: maps.IPv4From(orig.Addr()), ToPort: maps.PortFrom(orig.Port()), Flags: f}},
	}
}

// masqueradeSeeds are the kernel's masqueraded flows of local pods to
// outside the cluster, as NAT entry pairs keeping the kernel's address
// and port.
func masqueradeSeeds(flows []linux.CTFlow, n handoverNet, now uint64) []natPair {
	var out []natPair
	for _, f := range flows {
		to, snat := f.SNAT()
		if _, dnat := f.DNAT(); dnat || !snat || !f.Established() {
			continue
		}
		if !n.localPod(f.Orig.Src.Addr()) || !n.outside(f.Orig.Dst.Addr()) || to.Addr() != n.nodeIP {
			continue
		}
		out = append(out, newNATPair(f.Proto, f.Orig.Src, f.Orig.Dst, to, now))
	}
	return out
}

// inboundSeeds are the flows hosts outside the cluster opened to local
// pods, as CT_INBOUND entries: the pods' replies keep their address.
func inboundSeeds(flows []linux.CTFlow, n handoverNet, now uint64) []maps.CTRow {
	var out []maps.CTRow
	for _, f := range flows {
		_, snat := f.SNAT()
		if _, dnat := f.DNAT(); dnat || snat || !f.Established() {
			continue
		}
		if !n.outside(f.Orig.Src.Addr()) || !n.localPod(f.Orig.Dst.Addr()) {
			continue
		}
		out = append(out, maps.CTRow{Key: tupleOf(f.Orig.Dst, f.Orig.Src, f.Proto, dirCTInbound),
			Entry: maps.CTEntry{LastSeen: now, Flags: seededFlags(f.Proto), TxFlagsSeen: seenTCP(f.Proto), RxFlagsSeen: seenTCP(f.Proto)}})
	}
	return out
}

// svcSeed is a flow kube-proxy load-balanced, to be carried on by glia's
// load balancer.
type svcSeed struct {
	proto    uint8
	client   netip.AddrPort
	frontend netip.AddrPort
	backend  netip.AddrPort
	nodePort bool
	// snat is the node's address and port the kernel gave the flow
	// towards its backend (a NodePort flow to another node's backend);
	// invalid when none.
	snat netip.AddrPort
}

// serviceSeeds are the kernel's DNATed flows glia's load balancer would
// take, by the frontend they reached: a local pod's to a ClusterIP, and
// an outside client's to a NodePort of this node — towards a backend on
// another node with the kernel's SNAT to the node's address (glia SNATs
// those too), or towards a local backend without SNAT. A NodePort flow
// the kernel SNATed to a local backend has no equivalent in glia's
// datapath (it delivers those with the client's address), nor one to a
// remote backend without SNAT: those are counted, not taken.
func serviceSeeds(flows []linux.CTFlow, n handoverNet) (map[maps.SvcKey][]svcSeed, int) {
	out := map[maps.SvcKey][]svcSeed{}
	skipped := 0
	for _, f := range flows {
		be, dnat := f.DNAT()
		if !dnat || !f.Established() {
			continue
		}
		to, snat := f.SNAT()
		s := svcSeed{proto: f.Proto, client: f.Orig.Src, frontend: f.Orig.Dst, backend: be}
		var k maps.SvcKey
		switch {
		case n.localPod(f.Orig.Src.Addr()) && !snat:
			k = maps.SvcKey{Addr: maps.IPv4From(f.Orig.Dst.Addr()), Port: maps.PortFrom(f.Orig.Dst.Port()), Proto: f.Proto, Scope: maps.ScopeClusterIP}
		case f.Orig.Dst.Addr() == n.nodeIP && n.outside(f.Orig.Src.Addr()):
			local := n.localPod(be.Addr())
			switch {
			case local && !snat:
			case !local && snat && to.Addr() == n.nodeIP:
				s.snat = to
			default:
				skipped++
				continue
			}
			k = maps.SvcKey{Port: maps.PortFrom(f.Orig.Dst.Port()), Proto: f.Proto, Scope: maps.ScopeNodePort}
			s.nodePort = true
		default:
			continue
		}
		out[k] = append(out[k], s)
	}
	return out, skipped
}

// rows are the CT (and NAT) entries glia's lb_forward would have written
// for s, with the service's and backend's ids.
func (s svcSeed) rows(svcID, backendID uint32, now uint64) ([]maps.CTRow, []natPair) {
	f := seededFlags(s.proto)
	var kind uint16
	if s.nodePort {
		kind = ctFlagNodePort
	}
	seen := seenTCP(s.proto)
	ct := []maps.CTRow{
		{Key: tupleOf(s.client, s.frontend, s.proto, maps.DirCTService),
			Entry: maps.CTEntry{LastSeen: now, BackendID: backendID, SvcID: svcID, Flags: f | kind, TxFlagsSeen: seen, RxFlagsSeen: seen}},
		{Key: tupleOf(s.backend, s.client, s.proto, maps.DirCTReply),
			Entry: maps.CTEntry{LastSeen: now, BackendID: backendID, SvcID: svcID, RevSAddr: maps.IPv4From(s.frontend.Addr()),
				RevSPort: maps.PortFrom(s.frontend.Port()), Flags: f | kind, TxFlagsSeen: seen, RxFlagsSeen: seen}},
	}
	var nat []natPair
	if s.snat.IsValid() {
		nat = append(nat, newNATPair(s.proto, s.client, s.backend, s.snat, now))
	}
	return ct, nat
}

// HandoverStats count what one step copied.
type HandoverStats struct {
	Masqueraded int // flows to the outside world, with their port
	Inbound     int // flows outside hosts opened to local pods
	Services    int // load-balanced flows, with their backend
	Existing    int // already there with the same translation
	Conflicts   int // the other side translates them differently: left alone
	Skipped     int // live in glia's maps but not expressible on the other side
}

func (s HandoverStats) total() int { return s.Masqueraded + s.Inbound + s.Services }

func (s HandoverStats) logArgs() []any {
	return []any{"masqueraded", s.Masqueraded, "inbound", s.Inbound, "services", s.Services,
		"already-there", s.Existing, "conflicts", s.Conflicts, "not-expressible", s.Skipped}
}

// insertNew writes k=v into m unless k is there; it says whether it
// wrote, and whether an existing entry equals v.
func insertNew[K comparable, V comparable](m *ebpf.Map, k K, v V) (wrote, same bool, err error) {
	err = m.Update(&k, &v, ebpf.UpdateNoExist)
	if err == nil {
		return true, false, nil
	}
	if !errors.Is(err, ebpf.ErrKeyExist) {
		return false, false, fmt.Errorf("seed %s: %w", m, err)
	}
	var have V
	if err := m.Lookup(&k, &have); err != nil {
		return false, false, nil // gone meanwhile (LRU): the programs own it now
	}
	return false, have == v, nil
}

// sameNAT says whether an existing NAT entry translates as want does (its
// state and age are the programs').
func sameNAT(have, want maps.NATEntry) bool {
	return have.ToAddr == want.ToAddr && have.ToPort == want.ToPort
}

// seedNAT writes NAT pairs where glia has no entry of the flow.
func seedNAT(nat *maps.NAT, pairs []natPair, st *HandoverStats, count *int) error {
	var errs []error
	for _, p := range pairs {
		var have maps.NATEntry
		if err := nat.Map().Lookup(&p.egress.Key, &have); err == nil {
			if sameNAT(have, p.egress.Entry) {
				st.Existing++
			} else {
				st.Conflicts++
			}
			continue
		}
		// The reply entry first: a packet of the flow finding the
		// egress entry must find its way back.
		wrote, _, err := insertNew(nat.Map(), p.ingress.Key, p.ingress.Entry)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !wrote {
			var hv maps.NATEntry
			if err := nat.Map().Lookup(&p.ingress.Key, &hv); err == nil && !sameNAT(hv, p.ingress.Entry) {
				st.Conflicts++ // the port towards that remote is another flow's
				continue
			}
		}
		if wrote, same, err := insertNew(nat.Map(), p.egress.Key, p.egress.Entry); err != nil {
			errs = append(errs, err)
		} else if wrote || same {
			*count++
		} else {
			st.Conflicts++
		}
	}
	return errors.Join(errs...)
}

// seedCT writes CT rows where glia has no entry.
func seedCT(ct *maps.CT, rows []maps.CTRow, st *HandoverStats, count *int) error {
	var errs []error
	for _, r := range rows {
		wrote, _, err := insertNew(ct.Map(), r.Key, r.Entry)
		switch {
		case err != nil:
			errs = append(errs, err)
		case wrote:
			*count++
		default:
			st.Existing++
		}
	}
	return errors.Join(errs...)
}

// takeOverMasquerade seeds glia's NAT and CT maps with the kernel's
// masqueraded flows and the flows outside hosts opened to local pods.
func takeOverMasquerade(flows []linux.CTFlow, n handoverNet, ct *maps.CT, nat *maps.NAT) (HandoverStats, error) {
	var st HandoverStats
	now := maps.Monotonic()
	err := errors.Join(
		seedNAT(nat, masqueradeSeeds(flows, n, now), &st, &st.Masqueraded),
		seedCT(ct, inboundSeeds(flows, n, now), &st, &st.Inbound))
	return st, err
}

// takeOverServiceFlows seeds the CT entries (and NodePort NAT entries and
// session affinity) of the kernel's flows to one frontend, about to be
// written for the first time as val; backendID resolves a backend of the
// frontend to its id.
func takeOverServiceFlows(seeds []svcSeed, val maps.SvcValue, backendID func(netip.AddrPort, uint8) (uint32, bool),
	ct *maps.CT, nat *maps.NAT, affinity *maps.Affinity) (HandoverStats, error) {
	var st HandoverStats
	var errs []error
	now := maps.Monotonic()
	for _, s := range seeds {
		id, ok := backendID(s.backend, s.proto)
		if !ok {
			st.Skipped++ // its backend is not the Service's any more
			continue
		}
		rows, pairs := s.rows(val.ID, id, now)
		var n int
		errs = append(errs, seedNAT(nat, pairs, &st, &n))
		if len(pairs) > 0 && n == 0 {
			continue // its translation towards the backend is taken
		}
		before := st.Services
		errs = append(errs, seedCT(ct, rows[:1], &st, &st.Services))
		if st.Services == before {
			continue
		}
		var discard int
		errs = append(errs, seedCT(ct, rows[1:], &st, &discard))
		if val.Flags&maps.SvcFlagAffinity != 0 && affinity != nil {
			k := maps.AffinityKey{SvcID: val.ID, Client: maps.IPv4From(s.client.Addr())}
			if _, _, err := insertNew(affinity.Map(), k, maps.AffinityValue{LastSeen: now, BackendID: id}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return st, errors.Join(errs...)
}

// What a handback gives the kernel.
type handBackWhat struct {
	masquerade bool // masqueraded flows and inbound flows (iptables MASQUERADE takes over)
	services   bool // load-balanced flows (kube-proxy takes over)
}

// kernelFlows are the kernel conntrack entries that carry on the live
// flows of glia's maps that what hands to the kernel.
func kernelFlows(ct []maps.CTRow, nat []maps.NATRow, backends map[uint32]maps.Backend, n handoverNet, now uint64,
	what handBackWhat, st *HandoverStats) []linux.CTFlow {
	live := func(proto uint8, flags uint16, lastSeen uint64) bool {
		return maps.Remaining(proto, flags, lastSeen, now) > 0 && flags&(maps.CTFlagTxClosing|maps.CTFlagRxClosing) == 0
	}
	timeout := func(proto uint8, flags uint16, lastSeen uint64) uint32 {
		return uint32(maps.Remaining(proto, flags, lastSeen, now).Seconds()) + 1
	}
	egress := map[maps.Tuple]maps.NATEntry{}
	for _, r := range nat {
		if r.Key.Dir == maps.DirNATEgress {
			egress[r.Key] = r.Entry
		}
	}
	var out []linux.CTFlow
	if what.masquerade {
		for k, e := range egress {
			if k.Proto != maps.ProtoTCP && k.Proto != maps.ProtoUDP {
				continue
			}
			src, dst := addrPort(k.SAddr, k.SPort), addrPort(k.DAddr, k.DPort)
			if !n.localPod(src.Addr()) || !n.outside(dst.Addr()) || e.ToAddr.Addr() != n.nodeIP || !live(k.Proto, e.Flags, e.LastSeen) {
				continue
			}
			out = append(out, linux.CTFlow{Proto: k.Proto, Orig: linux.Tuple{Src: src, Dst: dst},
				Reply: linux.Tuple{Src: dst, Dst: addrPort(e.ToAddr, e.ToPort)}, Timeout: timeout(k.Proto, e.Flags, e.LastSeen)})
			st.Masqueraded++
		}
		for _, r := range ct {
			k, e := r.Key, r.Entry
			if k.Dir != dirCTInbound || (k.Proto != maps.ProtoTCP && k.Proto != maps.ProtoUDP) || !live(k.Proto, e.Flags, e.LastSeen) {
				continue
			}
			pod, remote := addrPort(k.SAddr, k.SPort), addrPort(k.DAddr, k.DPort)
			out = append(out, linux.CTFlow{Proto: k.Proto, Orig: linux.Tuple{Src: remote, Dst: pod},
				Reply: linux.Tuple{Src: pod, Dst: remote}, Timeout: timeout(k.Proto, e.Flags, e.LastSeen)})
			st.Inbound++
		}
	}
	if what.services {
		for _, r := range ct {
			k, e := r.Key, r.Entry
			if k.Dir != maps.DirCTService || (k.Proto != maps.ProtoTCP && k.Proto != maps.ProtoUDP) || !live(k.Proto, e.Flags, e.LastSeen) {
				continue
			}
			be, ok := backends[e.BackendID]
			if !ok || e.Flags&maps.CTFlagHairpin != 0 {
				st.Skipped++
				continue
			}
			client, frontend, backend := addrPort(k.SAddr, k.SPort), addrPort(k.DAddr, k.DPort), be.AddrPort()
			if backend.Addr() == client.Addr() {
				st.Skipped++ // hairpin: kube-proxy masquerades those otherwise
				continue
			}
			reply := linux.Tuple{Src: backend, Dst: client}
			if ne, ok := egress[tupleOf(client, backend, k.Proto, maps.DirNATEgress)]; ok && e.Flags&ctFlagNodePort != 0 {
				reply.Dst = addrPort(ne.ToAddr, ne.ToPort)
			}
			out = append(out, linux.CTFlow{Proto: k.Proto, Orig: linux.Tuple{Src: client, Dst: frontend}, Reply: reply,
				Timeout: timeout(k.Proto, e.Flags, e.LastSeen)})
			st.Services++
		}
	}
	return out
}

// writeKernel creates the kernel entries of flows. An entry the kernel
// has with the same translation is left; one without translation (the
// stack saw the flow while glia translated it) is replaced; one with
// another translation is a conflict, left alone.
func writeKernel(flows []linux.CTFlow, st *HandoverStats) error {
	existing, err := linux.ConntrackList()
	if err != nil {
		return err
	}
	type flowKey struct {
		proto uint8
		orig  linux.Tuple
	}
	have := make(map[flowKey]linux.CTFlow, len(existing))
	for _, f := range existing {
		have[flowKey{f.Proto, f.Orig}] = f
	}
	var errs []error
	for _, f := range flows {
		if k, ok := have[flowKey{f.Proto, f.Orig}]; ok {
			_, ksnat := k.SNAT()
			_, kdnat := k.DNAT()
			switch {
			case k.Reply == f.Reply:
				st.Existing++
				continue
			case ksnat || kdnat:
				st.Conflicts++
				continue
			}
			if err := linux.ConntrackDelete(f.Proto, f.Orig); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := linux.ConntrackCreate(f); errors.Is(err, linux.ErrConntrackExists) {
			st.Conflicts++ // a packet of the flow made one meanwhile
		} else if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// handBack gives the kernel the live flows of the maps that what names.
func handBack(ct *maps.CT, nat *maps.NAT, backends *maps.Backends, n handoverNet, what handBackWhat) (HandoverStats, error) {
	var st HandoverStats
	ctRows, err := ct.List()
	if err != nil {
		return st, err
	}
	natRows, err := nat.List()
	if err != nil {
		return st, err
	}
	bes := map[uint32]maps.Backend{}
	if what.services && backends != nil {
		list, err := backends.List()
		if err != nil {
			return st, err
		}
		for _, b := range list {
			bes[b.ID] = b.Backend
		}
	}
	flows := kernelFlows(ctRows, natRows, bes, n, maps.Monotonic(), what, &st)
	return st, writeKernel(flows, &st)
}

// HandBackPinned gives the kernel's connection tracking the live flows
// the maps an eBPF datapath pinned under bpffsDir translate — all of them:
// the caller is leaving the eBPF datapath (the legacy datapath's agent,
// before its masquerade rule goes in and again before the programs are
// detached). It returns nothing to do when nothing is pinned there.
func HandBackPinned(log *slog.Logger, node datapath.LocalNode, bpffsDir string) (HandoverStats, error) {
	var st HandoverStats
	open := func(name string) (*ebpf.Map, error) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(bpffsDir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		return m, nil
	}
	var ms []*ebpf.Map
	defer func() {
		for _, m := range ms {
			m.Close()
		}
	}()
	get := map[string]*ebpf.Map{}
	for _, name := range []string{maps.NameCT, maps.NameNAT, maps.NameBackends} {
		m, err := open(name)
		if err != nil {
			return st, err
		}
		if m == nil {
			return st, nil
		}
		ms = append(ms, m)
		get[name] = m
	}
	liberalConntrack(log)
	st, err := handBack(maps.NewCT(get[maps.NameCT]), maps.NewNAT(get[maps.NameNAT]), maps.NewBackends(get[maps.NameBackends]),
		netOf(node), handBackWhat{masquerade: true, services: true})
	if st.total() > 0 || st.Conflicts > 0 || st.Skipped > 0 {
		log.Info("Handed the eBPF datapath's established flows to the kernel's connection tracking", st.logArgs()...)
	}
	return st, err
}

// liberalConntrack keeps the kernel's connection tracking from resetting
// the flows a switch carries (linux.ConntrackLiberal says how), before
// either datapath's programs could send a flow's packets past the stack.
func liberalConntrack(log *slog.Logger) {
	changed, err := linux.ConntrackLiberal()
	if err != nil {
		log.Warn("Cannot make connection tracking liberal: flows carried across the switch may be reset", "sysctl", linux.SysctlTCPLiberal, "error", err)
		return
	}
	if changed {
		log.Info("Connection tracking no longer judges TCP windows, so that flows carried across a switch are not reset", "sysctl", linux.SysctlTCPLiberal+"=1")
	}
}

// handoverBeforeAttach is Init's first step of the handover, with the
// maps loaded and nothing of this run attached yet: the flows glia's maps
// translate and the new modes leave to the kernel are handed back, and
// the kernel's flows the new modes translate in glia's maps are taken
// over (masqueraded and inbound flows at once, Service flows as each
// frontend is first written); a second pass follows the attach when
// masquerading was taken over.
func (d *Datapath) handoverBeforeAttach(backends *maps.Backends) {
	liberalConntrack(d.log)
	n := netOf(d.node)
	ct, nat := maps.NewCT(d.objs.Maps[maps.NameCT]), maps.NewNAT(d.objs.Maps[maps.NameNAT])
	owners, err := ReadOwners(d.opts.StateDir)
	if err != nil {
		d.log.Warn("Handover record unreadable: taking over as after the kernel", "error", err)
	}
	d.owners = owners
	hb := handBackWhat{masquerade: d.opts.Masquerade() && !d.opts.BPFMasquerade(), services: !d.opts.Modes.KubeProxyReplacement}
	if hb.masquerade || hb.services {
		st, err := handBack(ct, nat, backends, n, hb)
		d.logHandover("Handed established flows to the kernel's connection tracking", st, err)
	}
	takeMasq := d.opts.BPFMasquerade() && owners.Masquerade != OwnerBPF
	takeSvcs := d.opts.Modes.KubeProxyReplacement && owners.Services != OwnerBPF
	if !takeMasq && !takeSvcs {
		return
	}
	flows, err := linux.ConntrackList()
	if err != nil {
		d.log.Warn("Cannot read the kernel's connection tracking: established flows are not taken over", "error", err)
		return
	}
	if takeMasq {
		st, err := takeOverMasquerade(flows, n, ct, nat)
		d.logHandover("Took over the kernel's masqueraded and inbound flows", st, err)
		d.secondPass = true
	}
	if takeSvcs {
		var skipped int
		d.svcSeeds, skipped = serviceSeeds(flows, n)
		total := 0
		for _, s := range d.svcSeeds {
			total += len(s)
		}
		if total > 0 || skipped > 0 {
			d.log.Info("Taking over the kernel's load-balanced flows as their Services are programmed",
				"flows", total, "frontends", len(d.svcSeeds), "not-expressible", skipped)
		}
		d.lb.newFrontend = d.seedFrontend
	}
}

// handoverAfterAttach takes over the kernel's flows opened while Init
// attached (a second pass: what the first wrote is left as it is) and
// records who translates masquerading now.
func (d *Datapath) handoverAfterAttach() {
	if d.secondPass {
		d.secondPass = false
		flows, err := linux.ConntrackList()
		if err == nil {
			var st HandoverStats
			st, err = takeOverMasquerade(flows, netOf(d.node), maps.NewCT(d.objs.Maps[maps.NameCT]), maps.NewNAT(d.objs.Maps[maps.NameNAT]))
			if st.total() > 0 {
				d.logHandover("Took over the kernel's flows opened during the attach", st, err)
			}
		}
		if err != nil {
			d.log.Warn("Second pass of the masquerade takeover failed", "error", err)
			return
		}
	}
	o := d.owners
	o.Masquerade = OwnerKernel
	if d.opts.BPFMasquerade() {
		o.Masquerade = OwnerBPF
	}
	if !d.opts.Modes.KubeProxyReplacement {
		o.Services = OwnerKernel
	}
	d.writeOwners(o)
}

func (d *Datapath) writeOwners(o Owners) {
	if o == d.owners {
		return
	}
	if err := WriteOwners(d.opts.StateDir, o); err != nil {
		d.log.Warn("Cannot record the handover", "error", err)
		return
	}
	d.owners = o
}

// seedFrontend is the load balancer's newFrontend hook while the Service
// flows of the kernel are taken over.
func (d *Datapath) seedFrontend(k maps.SvcKey, val maps.SvcValue) {
	seeds := d.svcSeeds[k]
	if len(seeds) == 0 {
		return
	}
	delete(d.svcSeeds, k)
	id := func(a netip.AddrPort, proto uint8) (uint32, bool) {
		b, ok := d.lb.bes[backendKey{addr: maps.IPv4From(a.Addr()), port: maps.PortFrom(a.Port()), proto: proto}]
		if !ok {
			return 0, false
		}
		return b.id, true
	}
	st, err := takeOverServiceFlows(seeds, val, id, maps.NewCT(d.objs.Maps[maps.NameCT]), maps.NewNAT(d.objs.Maps[maps.NameNAT]), d.lb.affinity)
	d.logHandover("Took over the kernel's flows to a Service frontend", st, err, "frontend", k.String())
}

// servicesSynced ends the takeover of Service flows after the first full
// sync of the load balancer: every frontend the cluster has was written.
func (d *Datapath) servicesSynced() {
	if d.lb.newFrontend == nil {
		return
	}
	left := 0
	for _, s := range d.svcSeeds {
		left += len(s)
	}
	if left > 0 {
		d.log.Info("Kernel flows to frontends no Service has were not taken over", "flows", left)
	}
	d.svcSeeds, d.lb.newFrontend = nil, nil
	o := d.owners
	o.Services = OwnerBPF
	d.writeOwners(o)
}

func (d *Datapath) logHandover(msg string, st HandoverStats, err error, args ...any) {
	if err != nil {
		d.log.Warn(msg+" (with errors)", append(append(args, st.logArgs()...), "error", err)...)
		return
	}
	if st.total() > 0 || st.Conflicts > 0 || st.Skipped > 0 {
		d.log.Info(msg, append(args, st.logArgs()...)...)
	}
}
