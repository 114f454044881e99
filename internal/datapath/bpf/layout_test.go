package bpf

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/datapath/policydp"
	"glia.dev/glia/internal/maps"
)

type field struct {
	Offset, Size uintptr
}

func layout(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Size() == 0 {
			continue // structs.HostLayout markers
		}
		out = append(out, field{f.Offset, f.Type.Size()})
	}
	return out
}

// The hand-written types of internal/maps must match the C structs as
// bpf2go generated them from the object's BTF.
func TestMapTypesMatchBTF(t *testing.T) {
	pairs := []struct {
		name      string
		generated any
		ours      any
	}{
		{"endpoint_key", FromContainerEndpointKey{}, maps.EndpointKey{}},
		{"endpoint_info", FromContainerEndpointInfo{}, maps.EndpointInfo{}},
		{"svc_key", FromContainerSvcKey{}, maps.SvcKey{}},
		{"svc_value", FromContainerSvcValue{}, maps.SvcValue{}},
		{"backend", FromContainerBackend{}, maps.Backend{}},
		{"slot_key", FromContainerSlotKey{}, maps.SlotKey{}},
		{"tuple", FromContainerTuple{}, maps.Tuple{}},
		{"ct_entry", FromContainerCtEntry{}, maps.CTEntry{}},
		{"nat_entry", FromContainerNatEntry{}, maps.NATEntry{}},
		{"tunnel_key", FromContainerTunnelKey{}, maps.TunnelKey{}},
		{"tunnel_value", FromContainerTunnelValue{}, maps.TunnelValue{}},
		{"metric_value", FromContainerMetricValue{}, maps.MetricValue{}},
		{"affinity_key", FromContainerAffinityKey{}, maps.AffinityKey{}},
		{"affinity_value", FromContainerAffinityValue{}, maps.AffinityValue{}},
		{"node_key", FromContainerNodeKey{}, maps.NodeKey{}},
		{"node_value", FromContainerNodeValue{}, maps.NodeValue{}},
		{"sock_key", SockLBSockKey{}, maps.SockKey{}},
		{"sock_value", SockLBSockValue{}, maps.SockValue{}},
	}
	for _, p := range pairs {
		g, o := reflect.TypeOf(p.generated), reflect.TypeOf(p.ours)
		if g.Size() != o.Size() {
			t.Errorf("%s: size %d in C, %d in internal/maps", p.name, g.Size(), o.Size())
			continue
		}
		if d := cmp.Diff(layout(g), layout(o)); d != "" {
			t.Errorf("%s: field layout (-C +Go):\n%s", p.name, d)
		}
	}

	// and the map specs agree with the wrappers' key and value sizes
	spec, err := LoadFromContainer()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string][2]uintptr{
		maps.NameEndpoints:  {reflect.TypeOf(maps.EndpointKey{}).Size(), reflect.TypeOf(maps.EndpointInfo{}).Size()},
		maps.NameServices:   {reflect.TypeOf(maps.SvcKey{}).Size(), reflect.TypeOf(maps.SvcValue{}).Size()},
		maps.NameBackends:   {4, reflect.TypeOf(maps.Backend{}).Size()},
		maps.NameSvcSlots:   {reflect.TypeOf(maps.SlotKey{}).Size(), 4},
		maps.NameMaglev:     {reflect.TypeOf(maps.SlotKey{}).Size(), 4},
		maps.NameCT:         {reflect.TypeOf(maps.Tuple{}).Size(), reflect.TypeOf(maps.CTEntry{}).Size()},
		maps.NameNAT:        {reflect.TypeOf(maps.Tuple{}).Size(), reflect.TypeOf(maps.NATEntry{}).Size()},
		maps.NameTunnel:     {reflect.TypeOf(maps.TunnelKey{}).Size(), reflect.TypeOf(maps.TunnelValue{}).Size()},
		maps.NameMetrics:    {4, reflect.TypeOf(maps.MetricValue{}).Size()},
		maps.NameAffinity:   {reflect.TypeOf(maps.AffinityKey{}).Size(), reflect.TypeOf(maps.AffinityValue{}).Size()},
		maps.NameNodeIPs:    {reflect.TypeOf(maps.NodeKey{}).Size(), reflect.TypeOf(maps.NodeValue{}).Size()},
		maps.NameSockRevNAT: {reflect.TypeOf(maps.SockKey{}).Size(), reflect.TypeOf(maps.SockValue{}).Size()},
	}
	// Network policy's maps (bpf/lib/policy.h) are package policydp's,
	// which creates and pins them from its own object: both objects must
	// agree on them.
	pol, err := policydp.LoadToContainer()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{policydp.MapIPCache, policydp.MapPolicy, policydp.MapEP, policydp.MapCT, policydp.MapState, policydp.MapDrops} {
		ps, ok := pol.Maps[name]
		if !ok {
			t.Errorf("policydp's object lacks map %s", name)
			continue
		}
		sizes[name] = [2]uintptr{uintptr(ps.KeySize), uintptr(ps.ValueSize)}
	}
	for name, ms := range spec.Maps {
		if name[0] == '.' {
			continue
		}
		want, ok := sizes[name]
		if !ok {
			t.Errorf("map %s has no wrapper in internal/maps", name)
			continue
		}
		if uintptr(ms.KeySize) != want[0] || uintptr(ms.ValueSize) != want[1] {
			t.Errorf("map %s: key/value %d/%d in C, %d/%d in internal/maps", name, ms.KeySize, ms.ValueSize, want[0], want[1])
		}
	}
}

// fingerprint describes a BTF type as maps.Layout.Fields does: a struct
// as name{field@offset:size ...}, an integer as u<bits> or s<bits>.
func fingerprint(t *testing.T, typ btf.Type) string {
	t.Helper()
	typ = btf.UnderlyingType(typ)
	switch v := typ.(type) {
	case *btf.Int:
		if v.Encoding&btf.Signed != 0 {
			return fmt.Sprintf("s%d", v.Size*8)
		}
		return fmt.Sprintf("u%d", v.Size*8)
	case *btf.Struct:
		var fs []string
		for _, m := range v.Members {
			size, err := btf.Sizeof(m.Type)
			if err != nil {
				t.Fatalf("%s.%s: %v", v.Name, m.Name, err)
			}
			fs = append(fs, fmt.Sprintf("%s@%d:%d", m.Name, m.Offset.Bytes(), size))
		}
		return v.Name + "{" + strings.Join(fs, " ") + "}"
	}
	t.Fatalf("no fingerprint for %T %v", typ, typ)
	return ""
}

// Every map the programs declare has a layout history in internal/maps
// whose current layout is the map as compiled — its type, sizes, flags
// and its structs' fields — so that a change to bpf/lib/maps.h cannot
// reach a node without a new layout version (and a converter) that
// migrates the maps an earlier version pinned.
func TestLayoutsMatchObjects(t *testing.T) {
	reg := maps.Layouts()
	if err := reg.Validate(); err != nil {
		t.Fatalf("maps.Layouts: %v", err)
	}
	all, err := specs()
	if err != nil {
		t.Fatal(err)
	}
	if all["sock_lb"], err = LoadSockLB(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for obj, spec := range all {
		for name, ms := range spec.Maps {
			if !strings.HasPrefix(name, "glia_") || policyMaps[name] {
				continue // network policy's maps are policydp's: it pins them, this loader never migrates them
			}
			seen[name] = true
			cur, ok := reg.Current(name)
			if !ok {
				t.Errorf("%s (in %s) has no layout in maps.Layouts: add version 1", name, obj)
				continue
			}
			fields := fingerprint(t, ms.Key) + " " + fingerprint(t, ms.Value)
			if !cur.Matches(ms.Type, ms.KeySize, ms.ValueSize, ms.Flags) || cur.Fields != fields {
				t.Errorf("%s (in %s) is compiled as\n\t%s key %d B value %d B flags %#x\n\tFields: %q\nbut its current layout %d is\n\t%s\n\tFields: %q\n"+
					"A change to a pinned map's definition needs layout version %d in internal/maps/layout.go, with its converter "+
					"from version %d (Up) and, when version %d's programs may use the new maps as they are, Compat: %d.",
					name, obj, ms.Type, ms.KeySize, ms.ValueSize, ms.Flags, fields, cur.Version, cur.Definition(), cur.Fields,
					cur.Version+1, cur.Version, cur.Version, cur.Version)
			}
		}
	}
	for name := range reg {
		if !seen[name] {
			t.Errorf("maps.Layouts has %s, which no program declares", name)
		}
	}
}
