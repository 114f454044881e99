package maps

import (
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
