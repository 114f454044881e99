package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestScrape(t *testing.T) {
	m := New()
	m.SetEndpoints(7)
	m.SetServices(3)
	m.SetPolicyDrops("ingress", 12)
	m.SetDrops("no-route", 1)
	m.SetPolicyDrops("ingress", 15) // absolute: replaces 12
	m.SetForwarded(DirectionIngress, 100, 64000)
	m.SetForwarded(DirectionEgress, 90, 5000)
	m.ObserveRTT("lab-node-1", "host", "icmp", 250*time.Microsecond, true)
	m.ObserveRTT("lab-node-1", "endpoint", "http", 2*time.Millisecond, true)
	m.ObserveRTT("lab-node-2", "host", "icmp", time.Millisecond, true)
	m.ObserveRTT("lab-node-2", "host", "icmp", 0, false) // failed: series removed
	m.ObserveRTT("lab-node-2", "host", "http", 3*time.Millisecond, true)
	m.SetReachable("lab-node-1", true)
	m.SetReachable("lab-node-2", false)
	m.SetMapPressure("glia_ct4", 0.25)
	m.SetMapPressure("glia_lb4", 1.5) // clamped
	m.SetHostRoutingMode(HostRoutingBPF)
	m.SetHostRoutingMode(HostRoutingLegacy)
	m.SetDatapathFallback("enable-bpf-masquerade")
	m.SetControllerFailures("endpoint-sync", 2)
	m.SetMapMigration("glia_ct", "migrated", 40, 6, 3)
	m.SetMapMigration("glia_affinity", "reset", 0, 5, 5)
	m.AddEndpointsSwept(2)
	m.AddEndpointsSwept(1)
	m.SetConfigPending(3, true)
	m.SetConfigPending(1, false)

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	want := `
# HELP glia_endpoints Number of endpoints (pod interfaces) managed by the agent.
# TYPE glia_endpoints gauge
glia_endpoints 7
# HELP glia_services Number of services programmed into the datapath.
# TYPE glia_services gauge
glia_services 3
# HELP glia_drops_total Packets dropped by the datapath, by reason (and direction, for policy-denied).
# TYPE glia_drops_total counter
glia_drops_total{direction="",reason="no-route"} 1
glia_drops_total{direction="ingress",reason="policy-denied"} 15
# HELP glia_forwarded_packets_total Packets forwarded by the datapath, by direction.
# TYPE glia_forwarded_packets_total counter
glia_forwarded_packets_total{direction="egress"} 90
glia_forwarded_packets_total{direction="ingress"} 100
# HELP glia_forwarded_bytes_total Bytes forwarded by the datapath, by direction.
# TYPE glia_forwarded_bytes_total counter
glia_forwarded_bytes_total{direction="egress"} 5000
glia_forwarded_bytes_total{direction="ingress"} 64000
# HELP glia_health_rtt_seconds Round-trip time of the last successful health probe, by node, target (host|endpoint) and probe (icmp|http).
# TYPE glia_health_rtt_seconds gauge
glia_health_rtt_seconds{node="lab-node-1",probe="http",target="endpoint"} 0.002
glia_health_rtt_seconds{node="lab-node-1",probe="icmp",target="host"} 0.00025
glia_health_rtt_seconds{node="lab-node-2",probe="http",target="host"} 0.003
# HELP glia_health_reachable 1 when every health probe of the node succeeded in the last round, else 0.
# TYPE glia_health_reachable gauge
glia_health_reachable{node="lab-node-1"} 1
glia_health_reachable{node="lab-node-2"} 0
# HELP glia_map_pressure Fill ratio (0..1) of a BPF map: entries / max entries.
# TYPE glia_map_pressure gauge
glia_map_pressure{map="glia_ct4"} 0.25
glia_map_pressure{map="glia_lb4"} 1
# HELP glia_host_routing_mode 1 for the host routing mode in use (BPF or Legacy), 0 for the other.
# TYPE glia_host_routing_mode gauge
glia_host_routing_mode{mode="BPF"} 0
glia_host_routing_mode{mode="Legacy"} 1
# HELP glia_datapath_fallback 1 when BPF host routing fell back to legacy, labelled with the config key that blocks it.
# TYPE glia_datapath_fallback gauge
glia_datapath_fallback{key="enable-bpf-masquerade"} 1
# HELP glia_controller_failures Consecutive failures of a controller since its last success.
# TYPE glia_controller_failures gauge
glia_controller_failures{name="endpoint-sync"} 2
# HELP glia_map_migration_entries Entries of a pinned map of another layout version or size the agent migrated at start, by map, action (migrated, reset, merged) and result (carried, lost).
# TYPE glia_map_migration_entries gauge
glia_map_migration_entries{action="migrated",map="glia_ct",result="carried"} 40
glia_map_migration_entries{action="migrated",map="glia_ct",result="lost"} 6
glia_map_migration_entries{action="reset",map="glia_affinity",result="carried"} 0
glia_map_migration_entries{action="reset",map="glia_affinity",result="lost"} 5
# HELP glia_map_migration_flows_lost Flows (conntrack, NAT) or entries (other maps) of a pinned map the agent could not carry into its new layout or size at start, by map.
# TYPE glia_map_migration_flows_lost gauge
glia_map_migration_flows_lost{map="glia_affinity"} 5
glia_map_migration_flows_lost{map="glia_ct"} 3
# HELP glia_endpoints_swept_total Endpoints deleted because their host veth was gone: a CNI DEL that reached the node while the agent was starting or down.
# TYPE glia_endpoints_swept_total counter
glia_endpoints_swept_total 3
# HELP glia_config_pending_changes Config keys whose value the config sources (ConfigMap glia-config, GliaNodeConfigs, the node's labels) would change at the agent's next restart; 0 when the agent runs what they say.
# TYPE glia_config_pending_changes gauge
glia_config_pending_changes 1
# HELP glia_config_pending_error 1 when the config sources as they are now do not resolve (the agent would refuse to restart on them), else 0.
# TYPE glia_config_pending_error gauge
glia_config_pending_error 0
`
	names := []string{
		NameEndpoints, NameServices, NameDropsTotal, NameForwardedPackets, NameForwardedBytes,
		NameHealthRTT, NameHealthReachable, NameMapPressure, NameHostRoutingMode,
		NameDatapathFallback, NameControllerFailures, NameMapMigrationEntries, NameMapMigrationFlowsLost,
		NameEndpointsSwept, NameConfigPendingChanges, NameConfigPendingError,
	}
	if err := testutil.ScrapeAndCompare(srv.URL, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}

	// The agent's own resource use and the Go runtime are exported too.
	for _, name := range []string{
		"glia_agent_process_cpu_seconds_total",
		"glia_agent_process_resident_memory_bytes",
		"go_goroutines",
	} {
		n, err := testutil.GatherAndCount(m.Registry(), name)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("%s: %d series, want 1", name, n)
		}
	}
	// No other metric escapes the glia_ / glia_agent_ / go_ prefixes.
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		n := mf.GetName()
		if !strings.HasPrefix(n, "glia_") && !strings.HasPrefix(n, "go_") {
			t.Errorf("metric %s has an unexpected prefix", n)
		}
	}
}

func TestFallbackClearedAndForgetNode(t *testing.T) {
	m := New()
	m.SetDatapathFallback("enable-bpf-masquerade", "kube-proxy-replacement")
	if got := testutil.CollectAndCount(m.datapathFallback); got != 2 {
		t.Fatalf("fallback series = %d, want 2", got)
	}
	m.SetDatapathFallback()
	if got := testutil.CollectAndCount(m.datapathFallback); got != 0 {
		t.Errorf("fallback series after clearing = %d, want 0", got)
	}

	m.ObserveRTT("a", "host", "icmp", time.Millisecond, true)
	m.ObserveRTT("a", "endpoint", "http", time.Millisecond, true)
	m.ObserveRTT("b", "host", "icmp", time.Millisecond, true)
	m.SetReachable("a", true)
	m.SetReachable("b", true)
	m.ForgetNode("a")
	if got := testutil.CollectAndCount(m.healthRTT); got != 1 {
		t.Errorf("rtt series after ForgetNode = %d, want 1", got)
	}
	if got := testutil.ToFloat64(m.healthReachable.WithLabelValues("b")); got != 1 {
		t.Errorf("reachable{b} = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(m.healthReachable); got != 1 {
		t.Errorf("reachable series after ForgetNode = %d, want 1", got)
	}
}

type constCollector struct{ desc *prometheus.Desc }

func (c constCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c constCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 42)
}

func TestRegisterCollector(t *testing.T) {
	m := New()
	c := constCollector{prometheus.NewDesc("glia_bpf_map_entries", "entries", nil, nil)}
	if err := m.RegisterCollector(c); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterCollector(c); err == nil {
		t.Error("registering the same collector twice succeeded")
	}
	// A collector may not take over a name Metrics owns.
	clash := constCollector{prometheus.NewDesc(NameDropsTotal, "clash", []string{"reason"}, nil)}
	if err := m.RegisterCollector(clash); err == nil {
		t.Errorf("registering a collector for %s succeeded", NameDropsTotal)
	}
	want := "# HELP glia_bpf_map_entries entries\n# TYPE glia_bpf_map_entries gauge\nglia_bpf_map_entries 42\n"
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "glia_bpf_map_entries"); err != nil {
		t.Error(err)
	}
	if !m.UnregisterCollector(c) {
		t.Error("unregister failed")
	}
	if n, _ := testutil.GatherAndCount(m.Registry(), "glia_bpf_map_entries"); n != 0 {
		t.Errorf("series after unregister = %d", n)
	}
}

func TestNilMetricsIgnoresCalls(t *testing.T) {
	var m *Metrics
	m.SetEndpoints(1)
	m.SetDrops("x", 1)
	m.SetForwarded(DirectionEgress, 1, 1)
	m.ObserveRTT("n", "host", "icmp", time.Millisecond, true)
	m.SetReachable("n", true)
	m.ForgetNode("n")
	m.SetHostRoutingMode(HostRoutingBPF)
	m.SetDatapathFallback("k")
	m.SetControllerFailures("c", 1)
	m.SetMapPressure("m", 1)
	m.SetMapMigration("m", "reset", 0, 1, 1)
	m.AddEndpointsSwept(1)
	m.SetConfigPending(1, true)
	if err := m.RegisterCollector(constCollector{}); err != nil {
		t.Error(err)
	}
}

func TestServe(t *testing.T) {
	// Reserve a loopback port, then serve on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	m := New()
	m.SetEndpoints(5)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		close(ready)
		errc <- Serve(ctx, addr, m.Handler())
	}()
	<-ready

	// Retry until the listener is up (Serve listens asynchronously); each
	// attempt fails fast with "connection refused" until then.
	var body string
	for range 1000 {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			select {
			case err := <-errc:
				t.Fatalf("Serve returned early: %v", err)
			default:
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		break
	}
	if !strings.Contains(body, "glia_endpoints 5\n") {
		t.Errorf("scrape does not contain glia_endpoints 5:\n%s", body)
	}

	// A second server on the same address fails and says where.
	if err := Serve(context.Background(), addr, m.Handler()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("second Serve on %s: err = %v, want a listen error naming the address", addr, err)
	}

	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	if _, err := http.Get("http://" + addr + "/metrics"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("scrape after cancel: err = %v, want connection refused", err)
	}
}
