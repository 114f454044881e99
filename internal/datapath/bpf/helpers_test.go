package bpf

import (
	"context"
	"errors"
	"iter"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/probe"
	"glia.dev/glia/internal/state"
)

// testOpts are the settings a test gives, in the words of the modes they
// mean; options() turns them into the datapath's Options, the kernel
// probed once per test binary.
type testOpts struct {
	RoutingMode          string
	AutoDirectNodeRoutes bool
	KubeProxyReplacement bool
	Masquerade           bool
	BPFMasquerade        bool
	HostRoutingBPF       bool
	LBAlgorithm          string
	StateDir             string
	BPFFSDir             string
	MTU                  int
	SocketLBCgroup       string
}

var kernel = sync.OnceValues(probe.Kernel)

func (o testOpts) options() datapath.Options {
	m := config.Modes{RoutingMode: o.RoutingMode, AutoDirectNodeRoutes: o.AutoDirectNodeRoutes, KubeProxyReplacement: o.KubeProxyReplacement,
		Masquerading: config.MasqDisabled, HostRouting: config.HostRouting{Mode: config.HostRoutingLegacy}, Datapath: config.DatapathBPF}
	switch {
	case o.BPFMasquerade:
		m.Masquerading = config.MasqBPF
	case o.Masquerade:
		m.Masquerading = config.MasqIPTables
	}
	if o.HostRoutingBPF {
		m.HostRouting.Mode = config.HostRoutingBPF
	}
	k, _ := kernel()
	return datapath.Options{Modes: m, LBAlgorithm: o.LBAlgorithm, Kernel: k, StateDir: o.StateDir, BPFFSDir: o.BPFFSDir,
		MTU: o.MTU, SocketLBCgroup: o.SocketLBCgroup}
}

// seq is objs as a table's iterator.
func seq[T any](objs []T) iter.Seq2[T, statedb.Revision] {
	return func(yield func(T, statedb.Revision) bool) {
		for i, o := range objs {
			if !yield(o, statedb.Revision(i+1)) {
				return
			}
		}
	}
}

// initHost is Init and what the reconcilers then do with the node-wide
// state it returns (the programs Init attached itself).
func initHost(ctx context.Context, d *Datapath) error {
	h, err := d.Init(ctx)
	if err != nil {
		return err
	}
	var errs []error
	sys := datapath.SysctlOps{Opts: d.opts}
	for _, s := range h.Sysctls {
		errs = append(errs, sys.Update(ctx, nil, 0, s))
	}
	masq := datapath.MasqueradeOps{Opts: d.opts}
	for _, m := range h.Masquerade {
		errs = append(errs, masq.Update(ctx, nil, 0, m))
	}
	errs = append(errs, masq.Prune(ctx, nil, seq(h.Masquerade)), d.Programs().Prune(ctx, nil, seq(h.Programs)))
	return errors.Join(errs...)
}

// refreshing is o as the reconciler's periodic refresh hands it over.
func refreshing[T interface {
	Clone() T
	SetStatus(reconciler.Status) T
}](o T) T {
	return o.Clone().SetStatus(reconciler.StatusRefreshing())
}

func upsert(ctx context.Context, d *Datapath, ep *state.Endpoint) error {
	return d.Endpoints().Update(ctx, nil, 0, ep)
}

// syncEndpoints is what the endpoint reconciler does with a table holding
// eps: every one updated, then everything else pruned.
func syncEndpoints(ctx context.Context, d *Datapath, eps ...*state.Endpoint) error {
	var errs []error
	for _, ep := range eps {
		errs = append(errs, upsert(ctx, d, ep))
	}
	return errors.Join(append(errs, d.Endpoints().Prune(ctx, nil, seq(eps)))...)
}

// syncNodes is what the node reconciler does with a table holding nodes.
func syncNodes(ctx context.Context, d *Datapath, nodes ...*state.Node) error {
	var errs []error
	for _, n := range nodes {
		errs = append(errs, d.Nodes().Update(ctx, nil, 0, n))
	}
	return errors.Join(append(errs, d.Nodes().Prune(ctx, nil, seq(nodes)))...)
}

// syncServices is what the service reconciler does with a table holding
// the Services of ports: every one updated, then the full pass.
func syncServices(ctx context.Context, d *Datapath, ports []svcPort) error {
	svcs := toServices(ports)
	var errs []error
	for _, s := range svcs {
		errs = append(errs, d.Services().Update(ctx, nil, 0, s))
	}
	return errors.Join(append(errs, d.Services().Prune(ctx, nil, seq(svcs)))...)
}

// svcPort is one port of a Service, as the tests spell Services: the
// namespace and name of the Service with one of its frontends.
type svcPort struct {
	Namespace       string
	Name            string
	PortName        string
	Protocol        string
	Frontend        netip.AddrPort
	NodePort        uint16
	Backends        []state.Backend
	SessionAffinity bool
}

// ServiceKey is "namespace/name".
func (s svcPort) ServiceKey() string { return s.Namespace + "/" + s.Name }

// toServices groups ports into their Services, in the order each Service
// first appears.
func toServices(ports []svcPort) []*state.Service {
	var out []*state.Service
	at := map[string]int{}
	for _, p := range ports {
		i, ok := at[p.ServiceKey()]
		if !ok {
			i = len(out)
			at[p.ServiceKey()] = i
			out = append(out, &state.Service{Name: state.ServiceName{Namespace: p.Namespace, Name: p.Name}})
		}
		out[i].Frontends = append(out[i].Frontends, state.Frontend{PortName: p.PortName, Protocol: p.Protocol, Addr: p.Frontend,
			NodePort: p.NodePort, SessionAffinity: p.SessionAffinity, Backends: p.Backends})
	}
	return out
}

// syncPorts is sync with the Services of ports.
func (w *lbWriter) syncPorts(ports []svcPort) error { return w.sync(slices.Values(toServices(ports))) }

// updatePorts updates each Service named in changed to its ports (none:
// removed).
func (w *lbWriter) updatePorts(changed map[string][]svcPort) error {
	var errs []error
	keys := make([]string, 0, len(changed))
	for k := range changed {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ns, name, _ := strings.Cut(k, "/")
		var fes []state.Frontend
		if svcs := toServices(changed[k]); len(svcs) > 0 {
			fes = svcs[0].Frontends
		}
		errs = append(errs, w.update(state.ServiceName{Namespace: ns, Name: name}, fes))
	}
	return errors.Join(errs...)
}

func requireKernelTCX(t *testing.T) {
	t.Helper()
	if k, _ := kernel(); !k.TCX {
		t.Skip("this kernel has no tcx")
	}
}
