// Package metrics holds glia-agent's Prometheus metrics: one registry of its
// own (never the global one), typed setters the subsystems call, the HTTP
// handler that exposes them and a server for it.
//
// Every metric name starts with "glia_". The agent's own resource use is
// exported by the standard process collector under "glia_agent_process_*"
// (glia_agent_process_cpu_seconds_total,
// glia_agent_process_resident_memory_bytes, ...) and by the Go runtime
// collector ("go_*").
package metrics

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"glia.dev/glia/internal/httpserve"
)

// Namespace prefixes every glia metric.
const Namespace = "glia"

// DefaultPort is the port the agent serves metrics on (<nodeIP>:9962).
const DefaultPort = 9962

// Host routing modes, as in api.HostRoutingStatus.Mode.
const (
	HostRoutingBPF    = "BPF"
	HostRoutingLegacy = "Legacy"
)

// Directions of glia_forwarded_*_total.
const (
	DirectionIngress = "ingress"
	DirectionEgress  = "egress"
)

// Metric names, exported so tests and dashboards agree with the code.
const (
	NameEndpoints          = "glia_endpoints"
	NameServices           = "glia_services"
	NameDropsTotal         = "glia_drops_total"
	NameForwardedPackets   = "glia_forwarded_packets_total"
	NameForwardedBytes     = "glia_forwarded_bytes_total"
	NameHealthRTT          = "glia_health_rtt_seconds"
	NameHealthReachable    = "glia_health_reachable"
	NameMapPressure        = "glia_map_pressure"
	NameHostRoutingMode    = "glia_host_routing_mode"
	NameDatapathFallback   = "glia_datapath_fallback"
	NameControllerFailures = "glia_controller_failures"
	NameReconcileRepairs   = "glia_reconcile_repairs_total"
	NameReconcileObjects   = "glia_reconcile_objects"
	// NameMapMigrationEntries counts, by map, action and result
	// ("carried" or "lost"), the entries of pinned maps of another
	// layout or size the agent migrated at start.
	NameMapMigrationEntries = "glia_map_migration_entries"
	// NameMapMigrationFlowsLost is the flows (conntrack, NAT) or entries
	// (other maps) a migration at start could not carry, by map.
	NameMapMigrationFlowsLost = "glia_map_migration_flows_lost"
	// NameEndpointsSwept counts endpoints the agent deleted because their
	// host veth was gone: a CNI DEL that did not reach the agent.
	NameEndpointsSwept = "glia_endpoints_swept_total"
	// NameConfigPendingChanges is the number of config keys whose value
	// the config sources (ConfigMap glia-config, GliaNodeConfigs, the
	// node's labels) would change at the agent's next restart.
	NameConfigPendingChanges = "glia_config_pending_changes"
	// NameConfigPendingError is 1 when the config sources as they are now
	// do not resolve: the agent would refuse to start on them.
	NameConfigPendingError = "glia_config_pending_error"
)

// Metrics is the agent's metric set. All methods are safe for concurrent
// use; a nil *Metrics ignores every call, so subsystems may run without one.
type Metrics struct {
	reg *prometheus.Registry

	endpoints          prometheus.Gauge
	services           prometheus.Gauge
	healthRTT          *prometheus.GaugeVec
	healthReachable    *prometheus.GaugeVec
	mapPressure        *prometheus.GaugeVec
	hostRoutingMode    *prometheus.GaugeVec
	datapathFallback   *prometheus.GaugeVec
	controllerFailures *prometheus.GaugeVec
	reconcileRepairs   *prometheus.CounterVec
	reconcileObjects   *prometheus.GaugeVec
	migrationEntries   *prometheus.GaugeVec
	migrationFlowsLost *prometheus.GaugeVec
	endpointsSwept     prometheus.Counter
	pendingChanges     prometheus.Gauge
	pendingError       prometheus.Gauge

	counters *datapathCounters
}

// New returns a Metrics with every glia metric, the process collector
// (namespace "glia_agent") and the Go runtime collector registered on a
// registry of its own.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameEndpoints,
			Help: "Number of endpoints (pod interfaces) managed by the agent.",
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameServices,
			Help: "Number of services programmed into the datapath.",
		}),
		healthRTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameHealthRTT,
			Help: "Round-trip time of the last successful health probe, by node, target (host|endpoint) and probe (icmp|http).",
		}, []string{"node", "target", "probe"}),
		healthReachable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameHealthReachable,
			Help: "1 when every health probe of the node succeeded in the last round, else 0.",
		}, []string{"node"}),
		mapPressure: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameMapPressure,
			Help: "Fill ratio (0..1) of a BPF map: entries / max entries.",
		}, []string{"map"}),
		hostRoutingMode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameHostRoutingMode,
			Help: "1 for the host routing mode in use (BPF or Legacy), 0 for the other.",
		}, []string{"mode"}),
		datapathFallback: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameDatapathFallback,
			Help: "1 when BPF host routing fell back to legacy, labelled with the config key that blocks it.",
		}, []string{"key"}),
		controllerFailures: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameControllerFailures,
			Help: "Consecutive failures of a controller since its last success.",
		}, []string{"name"}),
		reconcileRepairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameReconcileRepairs,
			Help: "Kernel objects a reconciler found drifted from the desired state (missing, changed, or left over) and repaired, by reconciler.",
		}, []string{"reconciler"}),
		reconcileObjects: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameReconcileObjects,
			Help: "Objects of a reconciler's desired-state table, by reconciliation status (done, pending, error).",
		}, []string{"reconciler", "status"}),
		migrationEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameMapMigrationEntries,
			Help: "Entries of a pinned map of another layout version or size the agent migrated at start, by map, action (migrated, reset, merged) and result (carried, lost).",
		}, []string{"map", "action", "result"}),
		migrationFlowsLost: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameMapMigrationFlowsLost,
			Help: "Flows (conntrack, NAT) or entries (other maps) of a pinned map the agent could not carry into its new layout or size at start, by map.",
		}, []string{"map"}),
		endpointsSwept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameEndpointsSwept,
			Help: "Endpoints deleted because their host veth was gone: a CNI DEL that reached the node while the agent was starting or down.",
		}),
		pendingChanges: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameConfigPendingChanges,
			Help: "Config keys whose value the config sources (ConfigMap glia-config, GliaNodeConfigs, the node's labels) would change at the agent's next restart; 0 when the agent runs what they say.",
		}),
		pendingError: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameConfigPendingError,
			Help: "1 when the config sources as they are now do not resolve (the agent would refuse to restart on them), else 0.",
		}),
		counters: newDatapathCounters(),
	}
	m.reg.MustRegister(
		m.endpoints, m.services, m.healthRTT, m.healthReachable, m.mapPressure,
		m.hostRoutingMode, m.datapathFallback, m.controllerFailures, m.reconcileRepairs, m.reconcileObjects,
		m.migrationEntries, m.migrationFlowsLost, m.endpointsSwept, m.pendingChanges, m.pendingError, m.counters,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "glia_agent"}),
		collectors.NewGoCollector(),
	)
	return m
}

// Registry returns the registry the metrics live in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// RegisterCollector adds a collector, e.g. one the datapath provides to
// export its own BPF map statistics. Its metric names must not clash with
// the ones above: the datapath reports drops and forwarded traffic through
// SetDrops and SetForwarded instead.
func (m *Metrics) RegisterCollector(c prometheus.Collector) error {
	if m == nil {
		return nil
	}
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("register collector: %w", err)
	}
	return nil
}

// UnregisterCollector removes a collector added by RegisterCollector.
func (m *Metrics) UnregisterCollector(c prometheus.Collector) bool {
	if m == nil {
		return false
	}
	return m.reg.Unregister(c)
}

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	})
}

// SetEndpoints sets glia_endpoints.
func (m *Metrics) SetEndpoints(n int) {
	if m != nil {
		m.endpoints.Set(float64(n))
	}
}

// SetServices sets glia_services.
func (m *Metrics) SetServices(n int) {
	if m != nil {
		m.services.Set(float64(n))
	}
}

// SetDrops sets glia_drops_total{reason} to total, an absolute count read
// from the datapath (e.g. the sum over CPUs of a per-CPU map). A value lower
// than the previous one is exported as is: Prometheus treats it as a counter
// reset, which is what happens when the map was recreated.
func (m *Metrics) SetDrops(reason string, total uint64) {
	if m != nil {
		m.counters.set(&m.counters.drops, reason+"\x00", total)
	}
}

// ReasonPolicyDenied is the drop reason of network policy.
const ReasonPolicyDenied = "policy-denied"

// SetPolicyDrops sets glia_drops_total{reason="policy-denied",direction}
// (direction "ingress" or "egress", relative to the pod whose policy
// denied) to an absolute count.
func (m *Metrics) SetPolicyDrops(direction string, total uint64) {
	if m != nil {
		m.counters.set(&m.counters.drops, ReasonPolicyDenied+"\x00"+direction, total)
	}
}

// SetForwarded sets glia_forwarded_packets_total{direction} and
// glia_forwarded_bytes_total{direction} to absolute counts.
func (m *Metrics) SetForwarded(direction string, packets, bytes uint64) {
	if m != nil {
		m.counters.set(&m.counters.packets, direction, packets)
		m.counters.set(&m.counters.bytes, direction, bytes)
	}
}

// ObserveRTT records one health probe. A successful probe sets
// glia_health_rtt_seconds{node,target,probe}; a failed one removes the
// series, so that no stale RTT is exported for a path that is down
// (glia_health_reachable says it is down).
func (m *Metrics) ObserveRTT(node, target, probe string, rtt time.Duration, ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.healthRTT.WithLabelValues(node, target, probe).Set(rtt.Seconds())
		return
	}
	m.healthRTT.DeleteLabelValues(node, target, probe)
}

// SetReachable sets glia_health_reachable{node} to 1 or 0.
func (m *Metrics) SetReachable(node string, ok bool) {
	if m != nil {
		m.healthReachable.WithLabelValues(node).Set(boolFloat(ok))
	}
}

// ForgetNode removes every health series of a node that left the cluster.
func (m *Metrics) ForgetNode(node string) {
	if m == nil {
		return
	}
	m.healthRTT.DeletePartialMatch(prometheus.Labels{"node": node})
	m.healthReachable.DeleteLabelValues(node)
}

// SetMapPressure sets glia_map_pressure{map} to ratio, clamped to 0..1.
func (m *Metrics) SetMapPressure(name string, ratio float64) {
	if m == nil {
		return
	}
	m.mapPressure.WithLabelValues(name).Set(min(max(ratio, 0), 1))
}

// SetHostRoutingMode sets glia_host_routing_mode{mode} to 1 for mode and 0
// for the other known mode.
func (m *Metrics) SetHostRoutingMode(mode string) {
	if m == nil {
		return
	}
	m.hostRoutingMode.Reset()
	for _, known := range []string{HostRoutingBPF, HostRoutingLegacy} {
		m.hostRoutingMode.WithLabelValues(known).Set(boolFloat(known == mode))
	}
	m.hostRoutingMode.WithLabelValues(mode).Set(1)
}

// SetDatapathFallback records why BPF host routing fell back: one series
// glia_datapath_fallback{key}=1 per blocking config key. Without keys there
// is no fallback and the metric has no series; alert on
// `glia_datapath_fallback == 1`.
func (m *Metrics) SetDatapathFallback(keys ...string) {
	if m == nil {
		return
	}
	m.datapathFallback.Reset()
	for _, k := range keys {
		m.datapathFallback.WithLabelValues(k).Set(1)
	}
}

// SetControllerFailures sets glia_controller_failures{name}.
func (m *Metrics) SetControllerFailures(name string, failures int) {
	if m != nil {
		m.controllerFailures.WithLabelValues(name).Set(float64(failures))
	}
}

// AddRepair counts one drifted kernel object a reconciler repaired.
func (m *Metrics) AddRepair(reconciler string) {
	if m != nil {
		m.reconcileRepairs.WithLabelValues(reconciler).Inc()
	}
}

// SetReconcileObjects sets glia_reconcile_objects{reconciler,status} for
// the three statuses.
func (m *Metrics) SetReconcileObjects(reconciler string, done, pending, errors int) {
	if m == nil {
		return
	}
	m.reconcileObjects.WithLabelValues(reconciler, "done").Set(float64(done))
	m.reconcileObjects.WithLabelValues(reconciler, "pending").Set(float64(pending))
	m.reconcileObjects.WithLabelValues(reconciler, "error").Set(float64(errors))
}

// SetMapMigration records what the agent did at start with one pinned
// map of another layout or size: glia_map_migration_entries{map,action,
// result} for carried and lost entries, glia_map_migration_flows_lost{map}.
func (m *Metrics) SetMapMigration(name, action string, carried, lost, flowsLost int) {
	if m == nil {
		return
	}
	m.migrationEntries.WithLabelValues(name, action, "carried").Set(float64(carried))
	m.migrationEntries.WithLabelValues(name, action, "lost").Set(float64(lost))
	m.migrationFlowsLost.WithLabelValues(name).Set(float64(flowsLost))
}

// AddEndpointsSwept counts n endpoints deleted because their host veth
// was gone.
func (m *Metrics) AddEndpointsSwept(n int) {
	if m != nil {
		m.endpointsSwept.Add(float64(n))
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// datapathCounters exports counters whose absolute values the datapath
// reads from BPF maps; prometheus.Counter cannot be set, so the values are
// kept here and turned into constant metrics at scrape time.
type datapathCounters struct {
	dropsDesc, packetsDesc, bytesDesc *prometheus.Desc

	mu                    sync.Mutex
	drops, packets, bytes map[string]uint64
}

func newDatapathCounters() *datapathCounters {
	return &datapathCounters{
		dropsDesc:   prometheus.NewDesc(NameDropsTotal, "Packets dropped by the datapath, by reason (and direction, for policy-denied).", []string{"reason", "direction"}, nil),
		packetsDesc: prometheus.NewDesc(NameForwardedPackets, "Packets forwarded by the datapath, by direction.", []string{"direction"}, nil),
		bytesDesc:   prometheus.NewDesc(NameForwardedBytes, "Bytes forwarded by the datapath, by direction.", []string{"direction"}, nil),
		drops:       map[string]uint64{},
		packets:     map[string]uint64{},
		bytes:       map[string]uint64{},
	}
}

func (d *datapathCounters) set(m *map[string]uint64, label string, v uint64) {
	d.mu.Lock()
	(*m)[label] = v
	d.mu.Unlock()
}

func (d *datapathCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- d.dropsDesc
	ch <- d.packetsDesc
	ch <- d.bytesDesc
}

func (d *datapathCounters) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range []struct {
		desc *prometheus.Desc
		vals map[string]uint64
	}{{d.dropsDesc, d.drops}, {d.packetsDesc, d.packets}, {d.bytesDesc, d.bytes}} {
		labels := make([]string, 0, len(s.vals))
		for l := range s.vals {
			labels = append(labels, l)
		}
		sort.Strings(labels)
		for _, l := range labels {
			if s.desc == d.dropsDesc {
				// "reason\x00direction"
				reason, dir, _ := strings.Cut(l, "\x00")
				ch <- prometheus.MustNewConstMetric(s.desc, prometheus.CounterValue, float64(s.vals[l]), reason, dir)
				continue
			}
			ch <- prometheus.MustNewConstMetric(s.desc, prometheus.CounterValue, float64(s.vals[l]), l)
		}
	}
}

// Serve serves h on addr (the agent passes "<nodeIP>:9962") until ctx is
// done, then shuts the server down gracefully. It returns nil after a
// shutdown caused by ctx and the error otherwise.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return httpserve.Serve(ctx, &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}, ln, 5*time.Second)
}

// SetConfigPending sets glia_config_pending_changes to changes and
// glia_config_pending_error to 1 when failed.
func (m *Metrics) SetConfigPending(changes int, failed bool) {
	if m == nil {
		return
	}
	m.pendingChanges.Set(float64(changes))
	e := 0.0
	if failed {
		e = 1
	}
	m.pendingError.Set(e)
}
