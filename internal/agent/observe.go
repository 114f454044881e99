package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/statedb"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	bpfdp "glia.dev/glia/internal/datapath/bpf"
	"glia.dev/glia/internal/health"
	"glia.dev/glia/internal/ipam"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/metrics"
	"glia.dev/glia/internal/state"
	"glia.dev/glia/internal/status"
	"glia.dev/glia/internal/version"
)

// healthTargets are every node's address and health endpoint, from the
// nodes table.
func (a *Agent) healthTargets() []health.Target {
	var out []health.Target
	for n := range a.tables.Nodes.All(a.tables.DB.ReadTxn()) {
		if !n.IP.IsValid() {
			continue
		}
		t := health.Target{Node: n.Name, Local: n.Local, HostIP: n.IP}
		if n.PodCIDR.IsValid() {
			t.EndpointIP = ipam.RouterIP(n.PodCIDR)
		}
		out = append(out, t)
	}
	return out
}

// startObservability starts /hello on the node address, the health
// endpoint's server, the prober and the metrics server.
func (a *Agent) startObservability(ctx context.Context, r config.Resolved) error {
	if err := a.healthEP.Start(ctx); err != nil {
		return fmt.Errorf("health endpoint server: %w", err)
	}
	helloAddr := net.JoinHostPort(a.node.IP.String(), strconv.Itoa(r.HealthPort))
	go func() {
		if err := health.ListenAndServeHello(ctx, helloAddr, a.node.Name); err != nil {
			a.log.Error("Health server failed", "addr", helloAddr, "error", err)
		}
	}()
	var err error
	a.prober, err = health.NewProber(a.log, health.ProberConfig{NodeName: a.node.Name, Port: r.HealthPort, Recorder: a.metrics}, a.healthTargets)
	if err != nil {
		return err
	}
	go a.prober.Run(ctx)
	if r.PrometheusServeAddr != "" {
		host, port, err := net.SplitHostPort(r.PrometheusServeAddr)
		if err != nil {
			return fmt.Errorf("%s %q: %w", config.KeyPrometheusServeAddr, r.PrometheusServeAddr, err)
		}
		if host == "" {
			host = a.node.IP.String()
		}
		addr := net.JoinHostPort(host, port)
		go func() {
			if err := metrics.Serve(ctx, addr, a.metrics.Handler()); err != nil {
				a.log.Error("Metrics server failed", "addr", addr, "error", err)
			}
		}()
	}
	if a.dp.Name() == config.DatapathBPF {
		m, err := ebpf.LoadPinnedMap(filepath.Join(a.cfg.BPFFSDir, maps.NameMetrics), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return fmt.Errorf("open datapath counters: %w", err)
		}
		a.bpfMetrics = maps.NewMetrics(m)
	}
	return nil
}

// updateMetrics refreshes the gauges from the desired state, the
// reconcilers and the datapath's counters.
func (a *Agent) updateMetrics() {
	m := a.metrics
	txn := a.tables.DB.ReadTxn()
	m.SetEndpoints(a.eps.Count())
	m.SetServices(a.tables.Services.NumObjects(txn))
	dec, _ := a.tables.Decided()
	m.SetHostRoutingMode(dec.Modes.HostRouting.Mode)
	if hr := dec.Modes.HostRouting; hr.Mode == config.HostRoutingLegacy && hr.BlockingKey != "" {
		m.SetDatapathFallback(hr.BlockingKey)
	} else {
		m.SetDatapathFallback()
	}
	for _, c := range a.ctrl.list() {
		m.SetControllerFailures(c.Name, c.Failures)
	}
	for _, s := range a.recs.Load().Summaries() {
		m.SetReconcileObjects(s.Name, s.Done, s.Pending, s.Errors)
	}
	a.updatePolicyMetrics()
	if a.bpfMetrics == nil {
		return
	}
	rows, err := a.bpfMetrics.List()
	if err != nil {
		a.log.Warn("Reading datapath counters failed", "error", err)
		return
	}
	// Every drop reason is exported, at 0 until it happens, so a user (and
	// glia connectivity test) can tell "no drops" from "no metric".
	for _, r := range maps.DropReasons() {
		m.SetDrops(maps.MetricName(r), 0)
	}
	var fwdP, fwdB uint64
	for _, r := range rows {
		switch r.Reason {
		case maps.MetricForward, maps.MetricRedirect:
			fwdP += r.Packets
			fwdB += r.Bytes
		default:
			m.SetDrops(maps.MetricName(r.Reason), r.Packets)
		}
	}
	m.SetForwarded(metrics.DirectionEgress, fwdP, fwdB)
}

func (a *Agent) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(api.PathHealthz, a.serveHealthz)
	mux.HandleFunc(api.PathHealth, a.serveHealth)
	mux.HandleFunc(api.PathConfig, a.serveConfig)
	mux.HandleFunc(api.PathServices, a.serveServices)
	mux.HandleFunc(api.PathPolicy, a.servePolicy)
	mux.HandleFunc(api.PathPolicySelectors, a.servePolicySelectors)
	mux.HandleFunc(api.PathPolicyTrace, a.servePolicyTrace)
	mux.Handle("/", api.NewHandler(a.log, a.eps, func(ctx context.Context) (any, error) { return a.status(), nil }))
	return mux
}

// status is the agent's answer to `glia status`: observations of the
// desired state, the reconcilers, the API connection and the datapath.
func (a *Agent) status() *api.Status {
	v := version.Get()
	s := &api.Status{NodeName: a.node.Name, Time: time.Now(), Datapath: a.dp.Name(), AgentUptime: time.Since(a.started), Version: v.Version, Commit: v.Commit}
	s.Readiness = a.readiness()
	s.Ready = ready(s.Readiness)
	s.Kubernetes = a.kubernetesStatus()
	dec, _ := a.tables.Decided()
	status.FromConfig(s, a.conf, a.warnings, dec.Modes)
	s.ConfigPending = a.pending.get()
	a.observeHostRouting(s)
	if dec.Modes.KubeProxyReplacement {
		s.KubeProxyReplacement.Devices = []string{a.node.Device + " " + a.node.IP.String()}
	}
	if s.Masquerading.Mode == config.MasqBPF {
		s.Masquerading.Device = a.node.Device
		s.Masquerading.CIDR = a.node.ClusterCIDR.String()
	}
	allocs := a.alloc.List()
	s.IPAM = api.IPAMStatus{PodCIDR: a.node.PodCIDR.String(), Allocated: len(allocs), Size: a.alloc.Size()}
	for owner, ip := range allocs {
		s.IPAM.Addresses = append(s.IPAM.Addresses, ip.String()+" ("+owner+")")
	}
	s.Endpoints = a.eps.Count()
	s.Services = a.tables.Services.NumObjects(a.tables.DB.ReadTxn())
	s.ServiceCIDR = a.svcCIDR.String()
	if a.watcher != nil {
		s.ServicesOutsideCIDR = a.watcher.OutsideServiceCIDR()
	}
	s.Policy = a.policyStatus()
	s.Controllers = a.ctrl.list()
	s.Reconcilers = a.reconcilerStatus()
	if a.prober != nil {
		s.ClusterHealth = a.prober.Status()
	}
	s.MapMigrations = a.mapMigrations()
	return s
}

// migrator is a datapath with pinned maps that migrates them at Init.
type migrator interface{ Migrations() []maps.Migration }

var _ migrator = (*bpfdp.Datapath)(nil)

// mapMigrations is what the datapath's Init did with pinned maps of
// another layout or size (nothing for a datapath without pinned maps).
func (a *Agent) mapMigrations() []api.MapMigration {
	dp, ok := a.dp.(migrator)
	if !ok {
		return nil
	}
	var out []api.MapMigration
	for _, m := range dp.Migrations() {
		out = append(out, api.MapMigration{Map: m.Map, Action: m.Action, FromVersion: m.FromVersion, ToVersion: m.ToVersion,
			FromMax: m.FromMax, ToMax: m.ToMax, Carried: m.Carried, Lost: m.Lost, FlowsLost: m.FlowsLost, Reason: m.Reason})
	}
	return out
}

// reconcilerStatus is every reconciler's table, with the repairs counted.
func (a *Agent) reconcilerStatus() []api.ReconcilerStatus {
	recs := a.recs.Load()
	if recs == nil {
		return nil
	}
	a.repairsMu.Lock()
	defer a.repairsMu.Unlock()
	var out []api.ReconcilerStatus
	for _, s := range recs.Summaries() {
		out = append(out, api.ReconcilerStatus{Name: s.Name, Objects: s.Objects, Done: s.Done, Pending: s.Pending,
			Errors: s.Errors, Failing: s.Failing, Repairs: a.repairs[s.Name]})
	}
	return out
}

// observeHostRouting checks the host-routing line against the kernel: BPF
// host routing holds only while the device programs are attached.
func (a *Agent) observeHostRouting(s *api.Status) {
	if s.HostRouting.Mode != config.HostRoutingBPF {
		return
	}
	for _, r := range a.reconcilerStatus() {
		if r.Name == datapath.ReconcilerPrograms && (r.Errors > 0 || r.Done < r.Objects) {
			s.HostRouting.Reason = fmt.Sprintf("decided, but %d of %d device programs are not attached: %s",
				r.Objects-r.Done, r.Objects, strings.Join(r.Failing, "; "))
		}
	}
}

// serveHealthz answers the socket's health check with the agent's
// readiness: 200 when ready, else 503 naming every failing check.
func (a *Agent) serveHealthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	checks := a.readiness()
	if !ready(checks) {
		var failing []string
		for _, c := range checks {
			if !c.OK {
				failing = append(failing, c.Name+": "+c.Message)
			}
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(api.Errorf(api.CodeNotReady, "%s", strings.Join(failing, "; ")))
		return
	}
	json.NewEncoder(w).Encode(map[string]string{"status": "ok"})
}

func (a *Agent) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(a.prober.Report())
}

func (a *Agent) serveConfig(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(config.Report{Node: a.node.Name, Inputs: a.inputs, Probe: a.probe})
}

// serveServices lists the Service frontends of the services table.
func (a *Agent) serveServices(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	if !a.modes.KubeProxyReplacement {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(api.Error{Code: "not-found", Message: "kube-proxy handles Services on " + a.node.Name +
			" (kube-proxy-replacement=false): see its iptables rules (glia lab exec --node " + a.node.Name + " -- iptables-save -t nat)"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(servicesToWire(a.tables.Services.All(a.tables.DB.ReadTxn())))
}

// servicesToWire lists every frontend of svcs as the socket API shows it,
// by protocol and frontend.
func servicesToWire(svcs iter.Seq2[*state.Service, statedb.Revision]) []api.Service {
	out := []api.Service{}
	for s := range svcs {
		for _, f := range s.Frontends {
			name := s.Name.String()
			if f.PortName != "" {
				name += ":" + f.PortName
			}
			typ := "ClusterIP"
			if f.NodePort != 0 {
				typ = "NodePort"
			}
			as := api.Service{Name: name, Type: typ, Frontend: f.Addr.String(), NodePort: f.NodePort, Protocol: f.Protocol, Backends: []api.ServiceBackend{}}
			for _, b := range f.Backends {
				as.Backends = append(as.Backends, api.ServiceBackend{Address: b.Addr.String(), Node: b.NodeName, Ready: b.Ready, Terminating: b.Terminating})
			}
			out = append(out, as)
		}
	}
	slices.SortFunc(out, func(a, b api.Service) int {
		if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
			return c
		}
		return netip.MustParseAddrPort(a.Frontend).Compare(netip.MustParseAddrPort(b.Frontend))
	})
	return out
}
