package maps

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// EndpointKey keys glia_endpoints.
type EndpointKey struct {
	Addr IPv4
}

// EndpointInfo is a local pod as the datapath sees it.
type EndpointInfo struct {
	IfIndex uint32 // host-side veth
	PodMAC  MAC
	HostMAC MAC
	Flags   uint32
}

// EndpointEntry is one row of glia_endpoints.
type EndpointEntry struct {
	Addr netip.Addr
	EndpointInfo
}

func (e EndpointEntry) String() string {
	return fmt.Sprintf("%-15s ifindex=%d pod-mac=%s host-mac=%s", e.Addr, e.IfIndex, e.PodMAC, e.HostMAC)
}

// Endpoints wraps glia_endpoints.
type Endpoints struct {
	table[EndpointKey, EndpointInfo]
}

// NewEndpoints wraps m.
func NewEndpoints(m *ebpf.Map) *Endpoints { return &Endpoints{table[EndpointKey, EndpointInfo]{m}} }

// Update inserts or replaces the endpoint at addr.
func (e *Endpoints) Update(addr netip.Addr, info EndpointInfo) error {
	return e.update(EndpointKey{IPv4From(addr)}, info)
}

// Delete removes the endpoint at addr; a missing one is not an error.
func (e *Endpoints) Delete(addr netip.Addr) error { return e.delete(EndpointKey{IPv4From(addr)}) }

// Lookup returns the endpoint at addr.
func (e *Endpoints) Lookup(addr netip.Addr) (EndpointInfo, bool, error) {
	return e.lookup(EndpointKey{IPv4From(addr)})
}

// List returns every endpoint.
func (e *Endpoints) List() ([]EndpointEntry, error) {
	ks, vs, err := e.list()
	if err != nil {
		return nil, err
	}
	out := make([]EndpointEntry, len(ks))
	for i := range ks {
		out[i] = EndpointEntry{Addr: ks[i].Addr.Addr(), EndpointInfo: vs[i]}
	}
	return out, nil
}

// Service scopes.
const (
	ScopeClusterIP = 0
	ScopeNodePort  = 1
)

// Service flags.
const (
	SvcFlagMaglev   = 1 << 0
	SvcFlagAffinity = 1 << 1
)

// SvcKey keys glia_services: a ClusterIP frontend, or a NodePort (Addr zero).
type SvcKey struct {
	Addr  IPv4
	Port  Port
	Proto uint8
	Scope uint8
}

// Less orders keys by scope, address, port and protocol (listings and
// the loader's deterministic order).
func (k SvcKey) Less(o SvcKey) bool {
	if k.Scope != o.Scope {
		return k.Scope < o.Scope
	}
	if k.Addr != o.Addr {
		return k.Addr.Addr().Less(o.Addr.Addr())
	}
	if k.Port != o.Port {
		return k.Port.Uint16() < o.Port.Uint16()
	}
	return k.Proto < o.Proto
}

func (k SvcKey) String() string {
	if k.Scope == ScopeNodePort {
		return fmt.Sprintf("%s/NodePort:%d", ProtoName(k.Proto), k.Port.Uint16())
	}
	return fmt.Sprintf("%s/%s:%d", ProtoName(k.Proto), k.Addr, k.Port.Uint16())
}

// SvcValue describes a frontend: its id (which keys its backend slots and
// maglev table), backend count and the generation its slots live in.
type SvcValue struct {
	ID       uint32
	Count    uint16
	Flags    uint16
	SlotBase uint32
	RevNATID uint32
}

// ServiceEntry is one row of glia_services.
type ServiceEntry struct {
	Key   SvcKey
	Value SvcValue
}

func (e ServiceEntry) String() string {
	algo := "random"
	if e.Value.Flags&SvcFlagMaglev != 0 {
		algo = "maglev"
	}
	return fmt.Sprintf("%-28s id=%d backends=%d algo=%s gen=%#x", e.Key, e.Value.ID, e.Value.Count, algo, e.Value.SlotBase)
}

// Services wraps glia_services.
type Services struct{ table[SvcKey, SvcValue] }

// NewServices wraps m.
func NewServices(m *ebpf.Map) *Services { return &Services{table[SvcKey, SvcValue]{m}} }

// Update inserts or replaces a frontend.
func (s *Services) Update(k SvcKey, v SvcValue) error { return s.update(k, v) }

// Delete removes a frontend; a missing one is not an error.
func (s *Services) Delete(k SvcKey) error { return s.delete(k) }

// Lookup returns a frontend.
func (s *Services) Lookup(k SvcKey) (SvcValue, bool, error) { return s.lookup(k) }

// List returns every frontend.
func (s *Services) List() ([]ServiceEntry, error) {
	ks, vs, err := s.list()
	if err != nil {
		return nil, err
	}
	out := make([]ServiceEntry, len(ks))
	for i := range ks {
		out[i] = ServiceEntry{ks[i], vs[i]}
	}
	return out, nil
}

// Backend is one backend address.
type Backend struct {
	Addr  IPv4
	Port  Port
	Proto uint8
	Flags uint8
}

// AddrPort returns the backend's address and port.
func (b Backend) AddrPort() netip.AddrPort { return netip.AddrPortFrom(b.Addr.Addr(), b.Port.Uint16()) }

// BackendEntry is one row of glia_backends.
type BackendEntry struct {
	ID uint32
	Backend
}

func (e BackendEntry) String() string {
	return fmt.Sprintf("%-6d %s/%s", e.ID, ProtoName(e.Proto), e.AddrPort())
}

// Backends wraps glia_backends.
type Backends struct{ table[uint32, Backend] }

// NewBackends wraps m.
func NewBackends(m *ebpf.Map) *Backends { return &Backends{table[uint32, Backend]{m}} }

// Update inserts or replaces backend id.
func (b *Backends) Update(id uint32, be Backend) error { return b.update(id, be) }

// Delete removes backend id; a missing one is not an error.
func (b *Backends) Delete(id uint32) error { return b.delete(id) }

// Lookup returns backend id.
func (b *Backends) Lookup(id uint32) (Backend, bool, error) { return b.lookup(id) }

// List returns every backend.
func (b *Backends) List() ([]BackendEntry, error) {
	ks, vs, err := b.list()
	if err != nil {
		return nil, err
	}
	out := make([]BackendEntry, len(ks))
	for i := range ks {
		out[i] = BackendEntry{ks[i], vs[i]}
	}
	return out, nil
}

// SlotKey keys glia_svc_slots and glia_maglev: (service id, generation
// base + index).
type SlotKey struct {
	SvcID uint32
	Slot  uint32
}

// SlotEntry is one row of a slot map.
type SlotEntry struct {
	Key       SlotKey
	BackendID uint32
}

func (e SlotEntry) String() string {
	return fmt.Sprintf("svc=%d slot=%#x backend=%d", e.Key.SvcID, e.Key.Slot, e.BackendID)
}

// Slots wraps glia_svc_slots or glia_maglev.
type Slots struct{ table[SlotKey, uint32] }

// NewSlots wraps m.
func NewSlots(m *ebpf.Map) *Slots { return &Slots{table[SlotKey, uint32]{m}} }

// Update sets one slot.
func (s *Slots) Update(k SlotKey, backendID uint32) error { return s.update(k, backendID) }

// UpdateBatch sets many slots of one service.
func (s *Slots) UpdateBatch(svcID, base uint32, ids []uint32) error {
	if len(ids) == 0 {
		return nil
	}
	keys := make([]SlotKey, len(ids))
	for i := range ids {
		keys[i] = SlotKey{SvcID: svcID, Slot: base + uint32(i)}
	}
	if _, err := s.m.BatchUpdate(keys, ids, nil); err != nil {
		// Hash maps support batch updates since 5.6; fall back otherwise.
		for i := range keys {
			if err := s.update(keys[i], ids[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes a slot; a missing one is not an error.
func (s *Slots) Delete(k SlotKey) error { return s.delete(k) }

// DeleteBatch removes the slots base..base+n-1 of one service; missing
// ones are not an error.
func (s *Slots) DeleteBatch(svcID, base, n uint32) error {
	if n == 0 {
		return nil
	}
	keys := make([]SlotKey, n)
	for i := range keys {
		keys[i] = SlotKey{SvcID: svcID, Slot: base + uint32(i)}
	}
	if done, err := s.m.BatchDelete(keys, nil); err == nil && done == len(keys) {
		return nil
	}
	// A missing key stops a batch delete (and hash maps support batch
	// operations only since 5.6): delete one by one.
	for i := range keys {
		if err := s.delete(keys[i]); err != nil {
			return err
		}
	}
	return nil
}

// List returns every slot.
func (s *Slots) List() ([]SlotEntry, error) {
	ks, vs, err := s.list()
	if err != nil {
		return nil, err
	}
	out := make([]SlotEntry, len(ks))
	for i := range ks {
		out[i] = SlotEntry{ks[i], vs[i]}
	}
	return out, nil
}

// AffinityKey keys glia_affinity: a client of a service with ClientIP
// session affinity.
type AffinityKey struct {
	SvcID  uint32
	Client IPv4
}

// AffinityValue is the backend the client's last new connection got.
type AffinityValue struct {
	LastSeen  uint64 // CLOCK_MONOTONIC nanoseconds
	BackendID uint32
	Pad       uint32
}

// AffinityEntry is one row of glia_affinity.
type AffinityEntry struct {
	Key   AffinityKey
	Value AffinityValue
}

func (e AffinityEntry) String() string {
	return fmt.Sprintf("svc=%d client=%s backend=%d", e.Key.SvcID, e.Key.Client, e.Value.BackendID)
}

// Affinity wraps glia_affinity.
type Affinity struct {
	table[AffinityKey, AffinityValue]
}

// NewAffinity wraps m.
func NewAffinity(m *ebpf.Map) *Affinity { return &Affinity{table[AffinityKey, AffinityValue]{m}} }

// Lookup returns a client's entry.
func (a *Affinity) Lookup(k AffinityKey) (AffinityValue, bool, error) { return a.lookup(k) }

// Delete removes an entry; a missing one is not an error.
func (a *Affinity) Delete(k AffinityKey) error { return a.delete(k) }

// List returns every entry.
func (a *Affinity) List() ([]AffinityEntry, error) {
	ks, vs, err := a.list()
	if err != nil {
		return nil, err
	}
	out := make([]AffinityEntry, len(ks))
	for i := range ks {
		out[i] = AffinityEntry{ks[i], vs[i]}
	}
	return out, nil
}

// Tuple directions.
const (
	DirCTService = 0 // CT: client -> frontend
	DirCTReply   = 1 // CT: backend -> client
	DirNATEgress = 0 // NAT: original tuple leaving the node
	DirNATReply  = 1 // NAT: reply tuple arriving at the node
)

// Tuple keys glia_ct and glia_nat.
type Tuple struct {
	SAddr IPv4
	DAddr IPv4
	SPort Port
	DPort Port
	Proto uint8
	Dir   uint8
	Pad   uint16
}

func (t Tuple) String() string {
	return fmt.Sprintf("%s %s:%d -> %s:%d", ProtoName(t.Proto), t.SAddr, t.SPort.Uint16(), t.DAddr, t.DPort.Uint16())
}

// CT flags: what a flow is (the low byte) and, in CT and NAT entries
// alike, where it is (the state bits, CTFlagState).
const (
	CTFlagHairpin  = 1 << 0
	CTFlagNodePort = 1 << 1

	CTFlagTracked    = 1 << 8  // the state bits are kept (else: an entry from before lifetimes)
	CTFlagSeenNonSyn = 1 << 9  // a TCP segment without SYN passed
	CTFlagSeenReply  = 1 << 10 // a packet of the side that did not open the flow passed
	CTFlagTxClosing  = 1 << 11 // FIN or RST from the side that opened the flow
	CTFlagRxClosing  = 1 << 12 // FIN or RST from the other side
	CTFlagState      = 0xff00
)

// Entry lifetimes, as bpf/lib/ct.h.
const (
	LifetimeTCP      = 21600 * time.Second // established
	LifetimeTCPSyn   = 60 * time.Second    // no segment without SYN yet
	LifetimeTCPClose = 10 * time.Second    // after a FIN or RST
	LifetimeNonTCP   = 60 * time.Second    // UDP, ICMP echo
)

// Lifetime is how long after its last refresh the datapath keeps a CT or
// NAT entry of proto with flags (ct_lifetime_ns in bpf/lib/ct.h).
func Lifetime(proto uint8, flags uint16) time.Duration {
	switch {
	case flags&CTFlagTracked == 0:
		if proto == ProtoTCP {
			return LifetimeTCP
		}
		return LifetimeNonTCP
	case proto != ProtoTCP:
		return LifetimeNonTCP
	case flags&(CTFlagTxClosing|CTFlagRxClosing) != 0:
		return LifetimeTCPClose
	case flags&CTFlagSeenNonSyn != 0:
		return LifetimeTCP
	}
	return LifetimeTCPSyn
}

// Remaining is how long an entry last refreshed at lastSeen lives on at
// now (both CLOCK_MONOTONIC nanoseconds); zero or less when it expired.
func Remaining(proto uint8, flags uint16, lastSeen, now uint64) time.Duration {
	return Lifetime(proto, flags) - time.Duration(now-lastSeen)
}

// StateNames names the state bits of flags as `cilium bpf ct list` does.
func StateNames(flags uint16) []string {
	var out []string
	for _, f := range []struct {
		bit  uint16
		name string
	}{
		{CTFlagRxClosing, "RxClosing"},
		{CTFlagTxClosing, "TxClosing"},
		{CTFlagSeenNonSyn, "SeenNonSyn"},
		{CTFlagSeenReply, "SeenReply"},
	} {
		if flags&f.bit != 0 {
			out = append(out, f.name)
		}
	}
	return out
}

// CTEntry is a connection tracking entry: a Service flow (its forward and
// reply entries) or a flow a remote opened to a pod. The state lives in
// the forward entry and is mirrored into the reply entry.
type CTEntry struct {
	LastSeen    uint64 // CLOCK_MONOTONIC nanoseconds of the last refresh
	BackendID   uint32
	SvcID       uint32
	RevSAddr    IPv4
	RevDAddr    IPv4
	RevSPort    Port
	Flags       uint16
	TxFlagsSeen uint8 // TCP flags sent by the side that opened the flow
	RxFlagsSeen uint8 // TCP flags sent by the other side
	Pad         uint16
}

// CTRow is one row of glia_ct.
type CTRow struct {
	Key   Tuple
	Entry CTEntry
}

func (r CTRow) String() string {
	if r.Key.Dir == DirCTService {
		return fmt.Sprintf("SVC   %-50s backend=%d svc=%d flags=%#x", r.Key, r.Entry.BackendID, r.Entry.SvcID, r.Entry.Flags)
	}
	s := fmt.Sprintf("REPLY %-50s rev-src=%s:%d", r.Key, r.Entry.RevSAddr, r.Entry.RevSPort.Uint16())
	if r.Entry.RevDAddr != (IPv4{}) {
		s += " rev-dst=" + r.Entry.RevDAddr.String()
	}
	return s + fmt.Sprintf(" backend=%d", r.Entry.BackendID)
}

// CT wraps glia_ct.
type CT struct{ table[Tuple, CTEntry] }

// NewCT wraps m.
func NewCT(m *ebpf.Map) *CT { return &CT{table[Tuple, CTEntry]{m}} }

// Lookup returns an entry.
func (c *CT) Lookup(k Tuple) (CTEntry, bool, error) { return c.lookup(k) }

// Update inserts or replaces an entry.
func (c *CT) Update(k Tuple, e CTEntry) error { return c.update(k, e) }

// Delete removes an entry; a missing one is not an error.
func (c *CT) Delete(k Tuple) error { return c.delete(k) }

// List returns every entry.
func (c *CT) List() ([]CTRow, error) {
	ks, vs, err := c.list()
	if err != nil {
		return nil, err
	}
	out := make([]CTRow, len(ks))
	for i := range ks {
		out[i] = CTRow{ks[i], vs[i]}
	}
	return out, nil
}

// NATEntry is the translation of one direction of a flow, with the
// flow's state (CTFlag* state bits), kept in the egress entry and mirrored
// into the ingress one.
type NATEntry struct {
	LastSeen uint64 // CLOCK_MONOTONIC nanoseconds of the last refresh
	ToAddr   IPv4
	ToPort   Port
	Flags    uint16
}

// NATRow is one row of glia_nat.
type NATRow struct {
	Key   Tuple
	Entry NATEntry
}

func (r NATRow) String() string {
	dir := "OUT"
	if r.Key.Dir == DirNATReply {
		dir = "IN "
	}
	return fmt.Sprintf("%s %-50s => %s:%d", dir, r.Key, r.Entry.ToAddr, r.Entry.ToPort.Uint16())
}

// NAT wraps glia_nat.
type NAT struct{ table[Tuple, NATEntry] }

// NewNAT wraps m.
func NewNAT(m *ebpf.Map) *NAT { return &NAT{table[Tuple, NATEntry]{m}} }

// Lookup returns an entry.
func (n *NAT) Lookup(k Tuple) (NATEntry, bool, error) { return n.lookup(k) }

// Update inserts or replaces an entry.
func (n *NAT) Update(k Tuple, e NATEntry) error { return n.update(k, e) }

// Delete removes an entry; a missing one is not an error.
func (n *NAT) Delete(k Tuple) error { return n.delete(k) }

// List returns every entry.
func (n *NAT) List() ([]NATRow, error) {
	ks, vs, err := n.list()
	if err != nil {
		return nil, err
	}
	out := make([]NATRow, len(ks))
	for i := range ks {
		out[i] = NATRow{ks[i], vs[i]}
	}
	return out, nil
}

// TunnelKey keys the glia_tunnel LPM trie.
type TunnelKey struct {
	PrefixLen uint32
	Addr      IPv4
}

// TunnelValue is the node owning a pod CIDR.
type TunnelValue struct {
	NodeIP IPv4
}

// TunnelEntry is one row of glia_tunnel.
type TunnelEntry struct {
	Prefix netip.Prefix
	NodeIP netip.Addr
}

func (e TunnelEntry) String() string { return fmt.Sprintf("%-18s via %s", e.Prefix, e.NodeIP) }

// Tunnel wraps glia_tunnel.
type Tunnel struct{ table[TunnelKey, TunnelValue] }

// NewTunnel wraps m.
func NewTunnel(m *ebpf.Map) *Tunnel { return &Tunnel{table[TunnelKey, TunnelValue]{m}} }

func tunnelKey(p netip.Prefix) TunnelKey {
	p = p.Masked()
	return TunnelKey{PrefixLen: uint32(p.Bits()), Addr: IPv4From(p.Addr())}
}

// Update points prefix at nodeIP.
func (t *Tunnel) Update(prefix netip.Prefix, nodeIP netip.Addr) error {
	return t.update(tunnelKey(prefix), TunnelValue{IPv4From(nodeIP)})
}

// Delete removes prefix; a missing one is not an error.
func (t *Tunnel) Delete(prefix netip.Prefix) error { return t.delete(tunnelKey(prefix)) }

// Lookup returns the node the longest entry covering prefix points at (an
// LPM trie matches the longest prefix, not the exact one).
func (t *Tunnel) Lookup(prefix netip.Prefix) (netip.Addr, bool, error) {
	v, ok, err := t.lookup(tunnelKey(prefix))
	return v.NodeIP.Addr(), ok, err
}

// List returns every entry.
func (t *Tunnel) List() ([]TunnelEntry, error) {
	ks, vs, err := t.list()
	if err != nil {
		return nil, err
	}
	out := make([]TunnelEntry, len(ks))
	for i := range ks {
		out[i] = TunnelEntry{netip.PrefixFrom(ks[i].Addr.Addr(), int(ks[i].PrefixLen)), vs[i].NodeIP.Addr()}
	}
	return out, nil
}

// NodeKey keys glia_node_ips.
type NodeKey struct {
	Addr IPv4
}

// Node flags.
const (
	NodeFlagLocal = 1 << 0 // this node's own address
)

// NodeValue describes a node address.
type NodeValue struct {
	Flags uint32
}

// NodeEntry is one row of glia_node_ips.
type NodeEntry struct {
	Addr netip.Addr
	NodeValue
}

func (e NodeEntry) String() string {
	if e.Flags&NodeFlagLocal != 0 {
		return fmt.Sprintf("%-15s local", e.Addr)
	}
	return e.Addr.String()
}

// NodeIPs wraps glia_node_ips: the addresses of the cluster's nodes, on
// which pods reach NodePorts.
type NodeIPs struct{ table[NodeKey, NodeValue] }

// NewNodeIPs wraps m.
func NewNodeIPs(m *ebpf.Map) *NodeIPs { return &NodeIPs{table[NodeKey, NodeValue]{m}} }

// Update inserts or replaces the node address addr.
func (n *NodeIPs) Update(addr netip.Addr, v NodeValue) error {
	return n.update(NodeKey{IPv4From(addr)}, v)
}

// Delete removes addr; a missing one is not an error.
func (n *NodeIPs) Delete(addr netip.Addr) error { return n.delete(NodeKey{IPv4From(addr)}) }

// Lookup returns the entry of addr.
func (n *NodeIPs) Lookup(addr netip.Addr) (NodeValue, bool, error) {
	return n.lookup(NodeKey{IPv4From(addr)})
}

// List returns every node address.
func (n *NodeIPs) List() ([]NodeEntry, error) {
	ks, vs, err := n.list()
	if err != nil {
		return nil, err
	}
	out := make([]NodeEntry, len(ks))
	for i := range ks {
		out[i] = NodeEntry{ks[i].Addr.Addr(), vs[i]}
	}
	return out, nil
}

// SockKey keys glia_sock_revnat: a socket (its cookie) of a node process
// the socket load balancer pointed at a backend.
type SockKey struct {
	Cookie uint64
	Addr   IPv4 // backend
	Port   Port
	Pad    uint16
}

// SockValue is the frontend the socket asked for.
type SockValue struct {
	Addr IPv4
	Port Port
	Pad  uint16
}

// SockRevNATEntry is one row of glia_sock_revnat.
type SockRevNATEntry struct {
	Key   SockKey
	Value SockValue
}

func (e SockRevNATEntry) String() string {
	return fmt.Sprintf("socket=%d backend=%s:%d frontend=%s:%d", e.Key.Cookie, e.Key.Addr, e.Key.Port.Uint16(),
		e.Value.Addr, e.Value.Port.Uint16())
}

// SockRevNAT wraps glia_sock_revnat.
type SockRevNAT struct{ table[SockKey, SockValue] }

// NewSockRevNAT wraps m.
func NewSockRevNAT(m *ebpf.Map) *SockRevNAT { return &SockRevNAT{table[SockKey, SockValue]{m}} }

// List returns every entry.
func (s *SockRevNAT) List() ([]SockRevNATEntry, error) {
	ks, vs, err := s.list()
	if err != nil {
		return nil, err
	}
	out := make([]SockRevNATEntry, len(ks))
	for i := range ks {
		out[i] = SockRevNATEntry{ks[i], vs[i]}
	}
	return out, nil
}

// Metric reasons, the index of glia_metrics.
const (
	MetricForward       = 0
	MetricRedirect      = 1
	MetricDropNoBackend = 2
	MetricDropNATNoPort = 3
	MetricDropInvalid   = 4
	MetricDropFIB       = 5
	MetricRejectRST     = 6
	MetricDropTunnel    = 7
	MetricDropCsum      = 8
	MetricMax           = 16
)

// metricNames names the reasons the datapath counts.
var metricNames = map[uint32]string{
	MetricForward:       "forward",
	MetricRedirect:      "redirect",
	MetricDropNoBackend: "drop-no-backend",
	MetricDropNATNoPort: "drop-nat-no-port",
	MetricDropInvalid:   "drop-invalid",
	MetricDropFIB:       "drop-fib",
	MetricRejectRST:     "reject-rst",
	MetricDropTunnel:    "drop-tunnel",
	MetricDropCsum:      "drop-csum",
}

// MetricName names a reason for logs and Prometheus labels; a reason this
// build does not know (a newer datapath's) is "reason-N".
func MetricName(reason uint32) string {
	if n, ok := metricNames[reason]; ok {
		return n
	}
	return fmt.Sprintf("reason-%d", reason)
}

// DropReasons lists the reasons that drop or reject a packet, in order.
func DropReasons() []uint32 {
	var out []uint32
	for r := uint32(0); r < MetricMax; r++ {
		if _, ok := metricNames[r]; ok && r != MetricForward && r != MetricRedirect {
			out = append(out, r)
		}
	}
	return out
}

// MetricValue counts packets and bytes.
type MetricValue struct {
	Packets uint64
	Bytes   uint64
}

// MetricRow is the sum over CPUs of one reason.
type MetricRow struct {
	Reason uint32
	MetricValue
}

func (r MetricRow) String() string {
	return fmt.Sprintf("%-18s packets=%d bytes=%d", MetricName(r.Reason), r.Packets, r.Bytes)
}

// Metrics wraps the per-CPU glia_metrics array.
type Metrics struct{ m *ebpf.Map }

// NewMetrics wraps m.
func NewMetrics(m *ebpf.Map) *Metrics { return &Metrics{m} }

// List returns the non-zero counters summed over CPUs.
func (m *Metrics) List() ([]MetricRow, error) {
	var out []MetricRow
	for r := uint32(0); r < MetricMax; r++ {
		var per []MetricValue
		if err := m.m.Lookup(&r, &per); err != nil {
			return nil, fmt.Errorf("lookup glia_metrics[%d]: %w", r, err)
		}
		var sum MetricValue
		for _, v := range per {
			sum.Packets += v.Packets
			sum.Bytes += v.Bytes
		}
		if sum.Packets != 0 {
			out = append(out, MetricRow{r, sum})
		}
	}
	return out, nil
}

// Age says how long ago a monotonic timestamp was, given the current one.
func Age(lastSeen, now uint64) time.Duration {
	if now < lastSeen {
		return 0
	}
	return time.Duration(now - lastSeen)
}
