// Package maps holds one typed wrapper per BPF map of glia's eBPF datapath.
// Every wrapper has idempotent Update and Delete and a List returning typed
// entries whose String() is what `glia bpf ... list` prints. The struct
// layouts mirror bpf/lib/maps.h; a test in internal/datapath/bpf checks them
// against the compiled objects.
package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Pinned map names, as in bpf/lib/maps.h.
const (
	NameEndpoints  = "glia_endpoints"
	NameServices   = "glia_services"
	NameBackends   = "glia_backends"
	NameSvcSlots   = "glia_svc_slots"
	NameMaglev     = "glia_maglev"
	NameCT         = "glia_ct"
	NameNAT        = "glia_nat"
	NameTunnel     = "glia_tunnel"
	NameAffinity   = "glia_affinity"
	NameMetrics    = "glia_metrics"
	NameNodeIPs    = "glia_node_ips"
	NameSockRevNAT = "glia_sock_revnat"
)

// MaglevM is the size of every maglev lookup table (a prime).
const MaglevM = 1021

// IPv4 is an address in network byte order, as the datapath stores it.
type IPv4 [4]byte

// IPv4From converts an IPv4 address; other addresses give the zero value.
func IPv4From(a netip.Addr) IPv4 {
	if !a.Is4() && !a.Is4In6() {
		return IPv4{}
	}
	return IPv4(a.Unmap().As4())
}

// Addr converts back to netip.
func (a IPv4) Addr() netip.Addr { return netip.AddrFrom4(a) }

func (a IPv4) String() string { return a.Addr().String() }

// Port is a 16-bit port (or ICMP identifier) in network byte order.
type Port [2]byte

// PortFrom converts a host-order port.
func PortFrom(p uint16) Port {
	var b Port
	binary.BigEndian.PutUint16(b[:], p)
	return b
}

// Uint16 returns the port in host order.
func (p Port) Uint16() uint16 { return binary.BigEndian.Uint16(p[:]) }

// MAC is an Ethernet address.
type MAC [6]byte

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// Protocol numbers used in keys.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// ProtoName names an IP protocol number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoICMP:
		return "ICMP"
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	}
	return fmt.Sprintf("proto-%d", p)
}

// ProtoNumber parses "TCP", "UDP" or "ICMP".
func ProtoNumber(name string) (uint8, error) {
	switch name {
	case "TCP", "tcp":
		return ProtoTCP, nil
	case "UDP", "udp":
		return ProtoUDP, nil
	case "ICMP", "icmp":
		return ProtoICMP, nil
	}
	return 0, fmt.Errorf("unsupported protocol %q", name)
}

// table is the shared mechanics of a typed hash map.
type table[K comparable, V any] struct {
	m *ebpf.Map
}

func (t table[K, V]) update(k K, v V) error {
	if err := t.m.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("update %s: %w", t.name(), err)
	}
	return nil
}

func (t table[K, V]) lookup(k K) (V, bool, error) {
	var v V
	if err := t.m.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return v, false, nil
		}
		return v, false, fmt.Errorf("lookup %s: %w", t.name(), err)
	}
	return v, true, nil
}

func (t table[K, V]) delete(k K) error {
	if err := t.m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete from %s: %w", t.name(), err)
	}
	return nil
}

// listBatch is how many entries list asks the kernel for at once.
const listBatch = 512

// list returns every entry: in batches of listBatch entries per system
// call where the map type supports it (hash maps since 5.6), else one
// entry at a time.
func (t table[K, V]) list() ([]K, []V, error) {
	if keys, vals, ok := t.listBatched(); ok {
		return keys, vals, nil
	}
	var (
		k    K
		v    V
		keys []K
		vals []V
	)
	it := t.m.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
		vals = append(vals, v)
	}
	if err := it.Err(); err != nil {
		return nil, nil, fmt.Errorf("iterate %s: %w", t.name(), err)
	}
	return keys, vals, nil
}

// listBatched lists the map with batch lookups; ok is false when the
// map cannot be listed so (then nothing is returned).
func (t table[K, V]) listBatched() ([]K, []V, bool) {
	var (
		cursor ebpf.MapBatchCursor
		keys   []K
		vals   []V
	)
	kbuf, vbuf := make([]K, listBatch), make([]V, listBatch)
	for {
		n, err := t.m.BatchLookup(&cursor, kbuf, vbuf, nil)
		keys = append(keys, kbuf[:n]...)
		vals = append(vals, vbuf[:n]...)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return keys, vals, true
		case err != nil:
			// not supported, or a hash bucket larger than the batch
			return nil, nil, false
		}
	}
}

func (t table[K, V]) name() string {
	if info, err := t.m.Info(); err == nil && info.Name != "" {
		return info.Name
	}
	return "map"
}

// Map returns the underlying map.
func (t table[K, V]) Map() *ebpf.Map { return t.m }
