package bpf

import (
	"reflect"
	"testing"

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
