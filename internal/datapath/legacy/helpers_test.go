package legacy

import (
	"context"
	"errors"
	"iter"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/state"
)

// opts are the datapath options of a legacy node.
func opts(masquerade, autoDirectNodeRoutes bool) datapath.Options {
	m := config.Modes{RoutingMode: "native", AutoDirectNodeRoutes: autoDirectNodeRoutes, Masquerading: config.MasqDisabled,
		HostRouting: config.HostRouting{Mode: config.HostRoutingLegacy}, Datapath: config.DatapathLegacy}
	if masquerade {
		m.Masquerading = config.MasqIPTables
	}
	return datapath.Options{Modes: m, MTU: 1500}
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
// state it returns: its sysctls and masquerade rule updated, any other
// masquerade rule pruned.
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
	errs = append(errs, masq.Prune(ctx, nil, seq(h.Masquerade)))
	return errors.Join(errs...)
}

// refreshing is ep as the reconciler's periodic refresh hands it over.
func refreshing(ep *state.Endpoint) *state.Endpoint {
	c := ep.Clone()
	c.Status = reconciler.StatusRefreshing()
	return c
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
