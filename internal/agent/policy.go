package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/statedb"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/policydp"
	"glia.dev/glia/internal/metrics"
	"glia.dev/glia/internal/policy"
	"glia.dev/glia/internal/reconcile"
	"glia.dev/glia/internal/state"
)

// Network policy's wiring: the policy datapath (maps and programs, the
// same for both datapaths) before the datapath, the controller computing
// the node's policy from the tables, its three reconcilers, enforcement
// turned on once the maps hold the computed policy, and the API of
// `glia policy`.

// policyPinDir is where the policy maps are pinned: beside the eBPF
// datapath's directory, which a switch to the legacy datapath removes.
func policyPinDir(bpffsDir string) string {
	return filepath.Join(filepath.Dir(bpffsDir), filepath.Base(bpffsDir)+"-policy")
}

// startPolicyDatapath opens (or creates) the policy maps and attaches the
// node-level program; the datapath's programs share the maps.
func (a *Agent) startPolicyDatapath(r config.Resolved) error {
	u, err := policydp.New(a.log, policydp.Config{
		PinDir: policyPinDir(a.cfg.BPFFSDir), Legacy: a.modes.Datapath == config.DatapathLegacy,
		Device: a.cfg.Device, ServiceCIDR: r.ServiceCIDR, TCX: a.probe.TCX,
	})
	if err != nil {
		return err
	}
	if err := u.Init(); err != nil {
		return fmt.Errorf("network policy datapath: %w", err)
	}
	a.policyDP = u
	return nil
}

// policySpecs are the policy reconcilers.
func (a *Agent) policySpecs() []reconcile.Spec {
	t, u := a.tables, a.policyDP
	isNode := func(addr netip.Addr) bool {
		for n := range t.Nodes.All(t.DB.ReadTxn()) {
			if n.IP == addr {
				return true
			}
		}
		return false
	}
	p := a.periods[datapath.ReconcilerEndpoints]
	return []reconcile.Spec{
		reconcile.For(policydp.ReconcilerIPCache, t.IPIdentities, policydp.IPCacheOps{U: u, Drift: a.drift, IsNode: isNode}, p),
		reconcile.For(policydp.ReconcilerPolicy, t.PolicyEntries, policydp.PolicyOps{U: u, Drift: a.drift}, p),
		reconcile.For(policydp.ReconcilerEndpoints, t.EndpointPolicies, policydp.EndpointOps{U: u, Drift: a.drift}, p),
	}
}

// enablePolicy waits until the first computed policy is in the maps, then
// turns enforcement on (it stays on, pinned, across restarts).
func (a *Agent) enablePolicy(ctx context.Context) error {
	t := a.tables
	for {
		txn := t.DB.ReadTxn()
		ok1, w1 := t.IPIdentities.Initialized(txn)
		ok2, w2 := t.PolicyEntries.Initialized(txn)
		ok3, w3 := t.EndpointPolicies.Initialized(txn)
		if ok1 && ok2 && ok3 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w1:
		case <-w2:
		case <-w3:
		}
	}
	txn := t.DB.ReadTxn()
	for name, rev := range map[string]statedb.Revision{
		policydp.ReconcilerIPCache:   t.IPIdentities.Revision(txn),
		policydp.ReconcilerPolicy:    t.PolicyEntries.Revision(txn),
		policydp.ReconcilerEndpoints: t.EndpointPolicies.Revision(txn),
	} {
		if err := a.recs.Load().WaitReconciled(ctx, name, rev); err != nil {
			return fmt.Errorf("waiting for the %s reconciler: %w", name, err)
		}
	}
	was, _ := a.policyDP.Ready()
	if err := a.policyDP.SetReady(); err != nil {
		return err
	}
	a.policyOn.Store(true)
	if !was {
		a.log.Info("Network policy enforced on this node from now on", "isolated", a.policyCtl.Current().Selected())
	}
	return nil
}

// waitEndpointPolicy is what a CNI ADD waits for after its endpoint is
// programmed: its policy in the maps and the programs on its interface.
// An endpoint of a pod the agent does not know yet waits for it (and
// denies everything meanwhile).
func (a *Agent) waitEndpointPolicy(ctx context.Context, ep *state.Endpoint) error {
	if ep.PodName == "" || a.policyCtl == nil {
		return nil
	}
	t := a.tables
	pod := ep.PodNamespace + "/" + ep.PodName
	for {
		row, _, watch, found := t.EndpointPolicies.GetWatch(t.DB.ReadTxn(), state.EndpointPolicyByIP.Query(ep.IP))
		if found && row.Pod == pod && row.HostIfName == ep.HostIfName && row.Waiting == "" {
			switch {
			case row.Status.IsPendingOrRefreshing():
			case row.Status.GetError() != "":
				return fmt.Errorf("network policy of %s: %s", pod, row.Status.GetError())
			default:
				return nil
			}
		}
		select {
		case <-ctx.Done():
			why := "its policy was not computed"
			if found && row.Waiting != "" {
				why = row.Waiting
			}
			return fmt.Errorf("waiting for the network policy of %s (%s): %w", pod, why, ctx.Err())
		case <-watch:
		}
	}
}

// policyStatus is the Policy part of `glia status`.
func (a *Agent) policyStatus() api.PolicyStatus {
	s := api.PolicyStatus{State: "Starting"}
	if a.policyCtl == nil {
		return s
	}
	r := a.policyCtl.Current()
	if r != nil {
		s.Isolated, s.Endpoints, s.Identities = r.Selected(), len(r.Endpoints), len(r.Identities)
	}
	s.Policies = a.tables.NetworkPolicies.NumObjects(a.tables.DB.ReadTxn())
	if a.policyOn.Load() {
		s.State = "Enabled"
	}
	if err := a.policyCtl.Err(); err != nil {
		s.State = "Error: " + err.Error()
	}
	if a.policyDP != nil {
		s.DeniedIngress, s.DeniedEgress, _ = a.policyDP.Drops()
	}
	return s
}

// updatePolicyMetrics exports the policy drops.
func (a *Agent) updatePolicyMetrics() {
	if a.policyDP == nil {
		return
	}
	in, eg, err := a.policyDP.Drops()
	if err != nil {
		return
	}
	a.metrics.SetPolicyDrops(metrics.DirectionIngress, in)
	a.metrics.SetPolicyDrops(metrics.DirectionEgress, eg)
}

// policyResult is the current computed policy, or an API error.
func (a *Agent) policyResult(w http.ResponseWriter) *policy.Result {
	var r *policy.Result
	if a.policyCtl != nil {
		r = a.policyCtl.Current()
	}
	if r == nil {
		http.Error(w, "the node's network policy is not computed yet (the agent is starting)", http.StatusServiceUnavailable)
	}
	return r
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// servePolicy answers `glia policy get`.
func (a *Agent) servePolicy(w http.ResponseWriter, req *http.Request) {
	r := a.policyResult(w)
	if r == nil {
		return
	}
	writeJSON(w, describePolicy(r))
}

// servePolicySelectors answers `glia policy selectors`.
func (a *Agent) servePolicySelectors(w http.ResponseWriter, req *http.Request) {
	r := a.policyResult(w)
	if r == nil {
		return
	}
	writeJSON(w, policySelectors(r))
}

// servePolicyTrace answers `glia policy trace`: ?from=&to=&port=N/proto.
func (a *Agent) servePolicyTrace(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	from, err := parsePeer(q.Get("from"))
	if err != nil {
		http.Error(w, "from: "+err.Error(), http.StatusBadRequest)
		return
	}
	to, err := parsePeer(q.Get("to"))
	if err != nil {
		http.Error(w, "to: "+err.Error(), http.StatusBadRequest)
		return
	}
	port, proto, err := ParsePortProto(q.Get("port"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r := a.policyResult(w)
	if r == nil {
		return
	}
	v, err := r.Trace(from, to, proto, port)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, policyTraceAPI(v))
}

func parsePeer(s string) (policy.Peer, error) {
	if s == "" {
		return policy.Peer{}, errors.New("empty: give a pod (namespace/name, or name in default) or an IPv4 address")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return policy.Peer{Addr: a}, nil
	}
	if !strings.Contains(s, "/") {
		s = "default/" + s
	}
	return policy.Peer{Pod: s}, nil
}

// ParsePortProto parses "N/proto" (proto TCP, UDP or SCTP; TCP when left
// out).
func ParsePortProto(s string) (uint16, uint8, error) {
	ps, protoS, ok := strings.Cut(s, "/")
	if !ok {
		protoS = "TCP"
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 {
		return 0, 0, fmt.Errorf("port %q: want N/proto, N from 1 to 65535 and proto TCP, UDP or SCTP", s)
	}
	proto, err := policy.ProtoNumber(protoS)
	if err != nil {
		return 0, 0, fmt.Errorf("port %q: %w", s, err)
	}
	return uint16(n), proto, nil
}

// runPolicy runs the controller and turns enforcement on once its first
// result is in the maps.
func (a *Agent) runPolicy(ctx context.Context) {
	go a.policyCtl.Run(ctx, 5*time.Millisecond)
	go func() {
		if err := a.enablePolicy(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("Network policy could not be enabled", "error", err)
		}
	}()
}
