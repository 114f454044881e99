package maps

import (
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf"
)

// Layout versions of the pinned maps.
//
// Every pinned map has a layout: its type, key and value sizes and flags,
// and what its bytes mean. A layout is never changed in place: a change
// to a map's C struct (bpf/lib/maps.h) or to the meaning of its bytes adds
// a new Layout to the map's history in Layouts, with the next version and
// a converter from the previous one. The agent records the layout version
// of every map it pins in NameLayout (keyed by the map's kernel id, so a
// record always describes the map it was written for, whichever name the
// map is pinned under), and migrates a map of an older layout at start
// (internal/datapath/bpf). Maps pinned before versions were recorded
// (glia up to commit 61f425b) have no record: their version is the newest
// layout whose definition they match. TestLayoutsMatchObjects (package
// bpf) fails when a compiled map no longer matches its current layout, and
// prints what to add.

// NameLayout is the pinned map of layout records: map id → LayoutRecord.
// Its own definition never changes (a change would make every record
// unreadable).
const NameLayout = "glia_layout"

// Converter carries one entry of a map's previous layout into the next
// one; keep false drops the entry (counted as lost). The slices it is
// given are its own.
type Converter func(key, value []byte) (k, v []byte, keep bool)

// Identity is the converter of a layout whose bytes the previous layout's
// entries already satisfy (a field that was padding and is now read as
// zero, a meaning added to bits that were always zero).
func Identity(k, v []byte) ([]byte, []byte, bool) { return k, v, true }

// Layout is one version of a pinned map's definition.
type Layout struct {
	Version   uint32
	Type      ebpf.MapType
	KeySize   uint32
	ValueSize uint32
	Flags     uint32
	// Fields fingerprints the key and value structs as the compiler laid
	// them out (names, offsets and sizes, from BTF), so that a change
	// keeping the sizes is caught too.
	Fields string
	// Compat is the oldest layout version whose agent and programs may use
	// a map of this layout as it is (a downgrade to it keeps the map).
	// Compat == Version: none older may.
	Compat uint32
	// Up converts an entry of the previous version's layout into this one;
	// nil for the first version, and for a change that cannot carry
	// entries over (they are reported lost).
	Up Converter
	// LastSeen is the byte offset of the value's u64 last-seen time
	// (CLOCK_MONOTONIC), or -1: when both an old and a new map hold an
	// entry, the newer wins, and a smaller map keeps the newest entries.
	LastSeen int
	// ProgramWritten: the programs add or change entries (conntrack, NAT,
	// affinity, socket reverse NAT, counters), so what they wrote in the
	// old map between the copy and the switch to the new programs is
	// merged after the switch. The agent writes the others, and only it.
	ProgramWritten bool
	// EntriesPerFlow is how many entries one flow takes (2 for conntrack
	// and NAT: a forward and a reply entry), for reports; 0: not flows.
	EntriesPerFlow int
}

// Definition says how l's type, sizes and flags read.
func (l Layout) Definition() string {
	return fmt.Sprintf("%s key %d B value %d B flags %#x", l.Type, l.KeySize, l.ValueSize, l.Flags)
}

// Matches says whether a map of type typ with these sizes and flags has
// layout l's definition.
func (l Layout) Matches(typ ebpf.MapType, keySize, valueSize, flags uint32) bool {
	return l.Type == typ && l.KeySize == keySize && l.ValueSize == valueSize && l.Flags == flags
}

// Registry holds every pinned map's layouts, oldest first; the last is
// the one this build's programs use.
type Registry map[string][]Layout

const noPrealloc = 1 // BPF_F_NO_PREALLOC

// Layouts returns the history of every map glia pins.
func Layouts() Registry {
	return Registry{
		NameEndpoints: {{Version: 1, Type: ebpf.Hash, KeySize: 4, ValueSize: 20, Flags: noPrealloc, Compat: 1, LastSeen: -1,
			Fields: "endpoint_key{addr@0:4} endpoint_info{ifindex@0:4 pod_mac@4:6 host_mac@10:6 flags@16:4}"}},
		NameServices: {{Version: 1, Type: ebpf.Hash, KeySize: 8, ValueSize: 16, Flags: noPrealloc, Compat: 1, LastSeen: -1,
			Fields: "svc_key{addr@0:4 port@4:2 proto@6:1 scope@7:1} svc_value{id@0:4 count@4:2 flags@6:2 slot_base@8:4 rev_nat_id@12:4}"}},
		NameBackends: {{Version: 1, Type: ebpf.Hash, KeySize: 4, ValueSize: 8, Flags: noPrealloc, Compat: 1, LastSeen: -1,
			Fields: "u32 backend{addr@0:4 port@4:2 proto@6:1 flags@7:1}"}},
		NameSvcSlots: {{Version: 1, Type: ebpf.Hash, KeySize: 8, ValueSize: 4, Flags: noPrealloc, Compat: 1, LastSeen: -1,
			Fields: "slot_key{svc_id@0:4 slot@4:4} u32"}},
		NameMaglev: {{Version: 1, Type: ebpf.Hash, KeySize: 8, ValueSize: 4, Flags: noPrealloc, Compat: 1, LastSeen: -1,
			Fields: "slot_key{svc_id@0:4 slot@4:4} u32"}},
		NameAffinity: {{Version: 1, Type: ebpf.LRUHash, KeySize: 8, ValueSize: 16, Compat: 1, LastSeen: 0, ProgramWritten: true,
			Fields: "affinity_key{svc_id@0:4 client@4:4} affinity_value{last_seen@0:8 backend_id@8:4 pad@12:4}"}},
		NameCT: {{Version: 1, Type: ebpf.LRUHash, KeySize: 16, ValueSize: 32, Compat: 1, LastSeen: 0, ProgramWritten: true, EntriesPerFlow: 2,
			Fields: "tuple{saddr@0:4 daddr@4:4 sport@8:2 dport@10:2 proto@12:1 dir@13:1 pad@14:2} " +
				"ct_entry{last_seen@0:8 backend_id@8:4 svc_id@12:4 rev_saddr@16:4 rev_daddr@20:4 rev_sport@24:2 flags@26:2 " +
				"tx_flags_seen@28:1 rx_flags_seen@29:1 pad@30:2}"}},
		NameNAT: {{Version: 1, Type: ebpf.LRUHash, KeySize: 16, ValueSize: 16, Compat: 1, LastSeen: 0, ProgramWritten: true, EntriesPerFlow: 2,
			Fields: "tuple{saddr@0:4 daddr@4:4 sport@8:2 dport@10:2 proto@12:1 dir@13:1 pad@14:2} " +
				"nat_entry{last_seen@0:8 to_addr@8:4 to_port@12:2 flags@14:2}"}},
		NameTunnel: {{Version: 1, Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 4, Flags: noPrealloc, Compat: 1, LastSeen: -1,
			Fields: "tunnel_key{prefixlen@0:4 addr@4:4} tunnel_value{node_ip@0:4}"}},
		NameNodeIPs: {{Version: 1, Type: ebpf.Hash, KeySize: 4, ValueSize: 4, Flags: noPrealloc, Compat: 1, LastSeen: -1,
			Fields: "node_key{addr@0:4} node_value{flags@0:4}"}},
		NameSockRevNAT: {{Version: 1, Type: ebpf.LRUHash, KeySize: 16, ValueSize: 8, Compat: 1, LastSeen: -1, ProgramWritten: true,
			Fields: "sock_key{cookie@0:8 addr@8:4 port@12:2 pad@14:2} sock_value{addr@0:4 port@4:2 pad@6:2}"}},
		NameMetrics: {{Version: 1, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, Compat: 1, LastSeen: -1, ProgramWritten: true,
			Fields: "u32 metric_value{packets@0:8 bytes@8:8}"}},
	}
}

// Current is the layout this build's programs use for name.
func (r Registry) Current(name string) (Layout, bool) {
	h := r[name]
	if len(h) == 0 {
		return Layout{}, false
	}
	return h[len(h)-1], true
}

// Find returns layout version v of name.
func (r Registry) Find(name string, v uint32) (Layout, bool) {
	for _, l := range r[name] {
		if l.Version == v {
			return l, true
		}
	}
	return Layout{}, false
}

// Infer returns the newest layout of name whose definition a map of that
// type, sizes and flags has: the version of a map pinned without a record.
func (r Registry) Infer(name string, typ ebpf.MapType, keySize, valueSize, flags uint32) (Layout, bool) {
	h := r[name]
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Matches(typ, keySize, valueSize, flags) {
			return h[i], true
		}
	}
	return Layout{}, false
}

// Chain returns the converters that carry an entry of version from to the
// current layout of name, in order (none when from is current), or an
// error naming the step that has no converter.
func (r Registry) Chain(name string, from uint32) ([]Converter, error) {
	h := r[name]
	start := -1
	for i, l := range h {
		if l.Version == from {
			start = i
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("layout version %d of %s is unknown to this glia", from, name)
	}
	var out []Converter
	for _, l := range h[start+1:] {
		if l.Up == nil {
			return nil, fmt.Errorf("layout version %d of %s cannot be converted from version %d", l.Version, name, l.Version-1)
		}
		out = append(out, l.Up)
	}
	return out, nil
}

// Validate checks the registry's histories: versions rising by one from
// 1, Compat never above Version, LastSeen inside the value.
func (r Registry) Validate() error {
	var errs []error
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for i, l := range r[n] {
			if l.Version != uint32(i+1) {
				errs = append(errs, fmt.Errorf("%s: layout %d has version %d, want %d", n, i, l.Version, i+1))
			}
			if l.Compat < 1 || l.Compat > l.Version {
				errs = append(errs, fmt.Errorf("%s: layout %d: compat %d outside 1..%d", n, l.Version, l.Compat, l.Version))
			}
			if l.LastSeen >= 0 && uint32(l.LastSeen)+8 > l.ValueSize {
				errs = append(errs, fmt.Errorf("%s: layout %d: last-seen offset %d outside its %d-byte value", n, l.Version, l.LastSeen, l.ValueSize))
			}
			if i > 0 && l.Up == nil && l.Compat < l.Version {
				errs = append(errs, fmt.Errorf("%s: layout %d is compatible with %d but has no converter from it", n, l.Version, l.Compat))
			}
		}
	}
	return errors.Join(errs...)
}

// LayoutRecord is the value of NameLayout: the layout a map (keyed by its
// kernel id) was created with.
type LayoutRecord struct {
	Version uint32
	Compat  uint32
}

// LayoutRecordsSpec is the definition of NameLayout.
func LayoutRecordsSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: NameLayout, Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 256, Flags: noPrealloc}
}

// LayoutRecords wraps NameLayout.
type LayoutRecords struct{ table[uint32, LayoutRecord] }

// NewLayoutRecords wraps m.
func NewLayoutRecords(m *ebpf.Map) *LayoutRecords {
	return &LayoutRecords{table[uint32, LayoutRecord]{m}}
}

// Get returns the record of map id.
func (r *LayoutRecords) Get(id ebpf.MapID) (LayoutRecord, bool, error) { return r.lookup(uint32(id)) }

// Set records the layout of map id.
func (r *LayoutRecords) Set(id ebpf.MapID, rec LayoutRecord) error { return r.update(uint32(id), rec) }

// Delete removes the record of map id; a missing one is not an error.
func (r *LayoutRecords) Delete(id ebpf.MapID) error { return r.delete(uint32(id)) }

// List returns every record by map id.
func (r *LayoutRecords) List() (map[ebpf.MapID]LayoutRecord, error) {
	ks, vs, err := r.list()
	if err != nil {
		return nil, err
	}
	out := make(map[ebpf.MapID]LayoutRecord, len(ks))
	for i := range ks {
		out[ebpf.MapID(ks[i])] = vs[i]
	}
	return out, nil
}

// Migration reports what the agent did with one pinned map at start.
type Migration struct {
	Map string `json:"map"`
	// Action: "migrated" (entries carried into a map of another layout or
	// size), "reset" (a layout it cannot migrate: a new, empty map),
	// or "merged" (a previous map an interrupted start left, merged into
	// the current one).
	Action      string `json:"action"`
	FromVersion uint32 `json:"fromVersion"`
	ToVersion   uint32 `json:"toVersion"`
	FromMax     uint32 `json:"fromMaxEntries"`
	ToMax       uint32 `json:"toMaxEntries"`
	// Carried entries are in the new map; Lost ones are not (an entry the
	// converter dropped, one that did not fit, every entry of a layout that
	// cannot be migrated).
	Carried int `json:"carried"`
	Lost    int `json:"lost"`
	// FlowsLost is Lost in flows for conntrack and NAT (two entries a
	// flow, rounded up), else Lost.
	FlowsLost int    `json:"flowsLost"`
	Reason    string `json:"reason"`
}

// Flows turns an entry count of a map with layout l into flows.
func (l Layout) Flows(entries int) int {
	if l.EntriesPerFlow <= 1 {
		return entries
	}
	return (entries + l.EntriesPerFlow - 1) / l.EntriesPerFlow
}
