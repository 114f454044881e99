package maps

import (
	"net/netip"
	"slices"
	"testing"
)

func TestMetricNames(t *testing.T) {
	drops := DropReasons()
	want := []uint32{MetricDropNoBackend, MetricDropNATNoPort, MetricDropInvalid, MetricDropFIB,
		MetricRejectRST, MetricDropTunnel, MetricDropCsum}
	if !slices.Equal(drops, want) {
		t.Fatalf("DropReasons() = %v, want %v", drops, want)
	}
	seen := map[string]bool{}
	for r := uint32(0); r < MetricMax; r++ {
		n := MetricName(r)
		if seen[n] {
			t.Errorf("two reasons named %q", n)
		}
		seen[n] = true
	}
	if got := MetricName(MetricDropCsum); got != "drop-csum" {
		t.Errorf("MetricName(MetricDropCsum) = %q", got)
	}
	if got := MetricName(MetricMax + 3); got != "reason-19" {
		t.Errorf("an unknown reason is named %q, want reason-19", got)
	}
}

func TestSvcKeyLess(t *testing.T) {
	key := func(addr string, port uint16, proto, scope uint8) SvcKey {
		return SvcKey{Addr: IPv4From(netip.MustParseAddr(addr)), Port: PortFrom(port), Proto: proto, Scope: scope}
	}
	ordered := []SvcKey{
		key("198.18.128.9", 80, 6, ScopeClusterIP),
		key("198.18.128.10", 53, 17, ScopeClusterIP), // numerically after .9, not as text
		key("198.18.128.10", 80, 6, ScopeClusterIP),
		key("198.18.128.10", 80, 17, ScopeClusterIP),
		key("198.18.0.11", 30080, 6, ScopeNodePort), // NodePort scope after every ClusterIP
	}
	for i := range ordered {
		for j := range ordered {
			if got, want := ordered[i].Less(ordered[j]), i < j; got != want {
				t.Errorf("%v.Less(%v) = %t, want %t", ordered[i], ordered[j], got, want)
			}
		}
	}
}
