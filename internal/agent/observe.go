package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/health"
	"glia.dev/glia/internal/ipam"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/metrics"
)

// setupHealthEndpoint creates (or adopts, after a restart) the node's health
// endpoint: the pod CIDR's router address in a namespace of its own, routed
// by the datapath like any pod.
func (a *Agent) setupHealthEndpoint(mtu, port int) error {
	ep, err := health.SetupEndpoint(a.log, health.EndpointConfig{
		StateDir: a.cfg.StateDir, NodeName: a.node.Name,
		IP: ipam.RouterIP(a.node.PodCIDR), MTU: mtu, Port: port,
	})
	if err != nil {
		return fmt.Errorf("health endpoint: %w", err)
	}
	a.healthEP = ep
	return nil
}

// extraEndpoints are the endpoints the agent owns itself (the health
// endpoint); the endpoint manager's syncs must keep them.
func (a *Agent) extraEndpoints() []api.Endpoint {
	if a.healthEP == nil {
		return nil
	}
	return []api.Endpoint{a.healthEP.API()}
}

// healthTargets are every node's address and health endpoint.
func (a *Agent) healthTargets() []health.Target {
	var out []health.Target
	for _, n := range a.watcher.Nodes() {
		t := health.Target{Node: n.Name, Local: n.Name == a.node.Name}
		for _, addr := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(addr.Address); err == nil && ip.Is4() && addr.Type == "InternalIP" {
				t.HostIP = ip
			}
		}
		if p, err := netip.ParsePrefix(n.Spec.PodCIDR); err == nil {
			t.EndpointIP = ipam.RouterIP(p)
		}
		if t.HostIP.IsValid() {
			out = append(out, t)
		}
	}
	return out
}

// startObservability starts /hello on the node address, the health
// endpoint's server, the prober and the metrics server.
func (a *Agent) startObservability(ctx context.Context, r config.Resolved) error {
	a.metrics = metrics.New()
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
	if a.dp.Name() != "legacy" {
		m, err := ebpf.LoadPinnedMap(filepath.Join(a.cfg.BPFFSDir, maps.NameMetrics), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return fmt.Errorf("open datapath counters: %w", err)
		}
		a.bpfMetrics = maps.NewMetrics(m)
	}
	return nil
}

// updateMetrics refreshes the gauges from the agent's state and the
// datapath's counters.
func (a *Agent) updateMetrics(ctx context.Context) {
	m := a.metrics
	if m == nil {
		return
	}
	if eps, err := a.eps.ListEndpoints(ctx); err == nil {
		m.SetEndpoints(len(eps))
	}
	m.SetServices(a.watcher.ServiceCount())
	m.SetHostRoutingMode(a.modes.HostRouting.Mode)
	if a.modes.HostRouting.Mode == config.HostRoutingLegacy && a.modes.HostRouting.BlockingKey != "" {
		m.SetDatapathFallback(a.modes.HostRouting.BlockingKey)
	} else {
		m.SetDatapathFallback()
	}
	for _, c := range a.ctrl.list() {
		m.SetControllerFailures(c.Name, c.Failures)
	}
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

// serveServices lists the Service frontends as the agent sees them.
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
	out := []api.Service{}
	for _, s := range a.watcher.Services() {
		name := s.Namespace + "/" + s.Name
		if s.PortName != "" {
			name += ":" + s.PortName
		}
		typ := "ClusterIP"
		if s.NodePort != 0 {
			typ = "NodePort"
		}
		as := api.Service{Name: name, Type: typ, Frontend: s.Frontend.String(), NodePort: s.NodePort, Protocol: s.Protocol, Backends: []api.ServiceBackend{}}
		for _, b := range s.Backends {
			as.Backends = append(as.Backends, api.ServiceBackend{Address: b.Addr.String(), Node: b.NodeName, Ready: b.Ready, Terminating: b.Terminating})
		}
		out = append(out, as)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
