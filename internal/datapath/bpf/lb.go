package bpf

import (
	"context"
	"errors"
	"iter"

	"github.com/cilium/statedb"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/state"
)

// serviceOps reconciles the load balancer (kube-proxy replacement): each
// Service's frontends through the writer of services.go, which touches
// only the map entries that differ from what it wrote. Pruning is the
// writer's full pass: frontends no Service claims go, and the maps are
// read back and repaired where they drifted from what was written.
type serviceOps struct{ d *Datapath }

func (o serviceOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, s *state.Service) error {
	d := o.d
	return d.locked(func() error {
		d.log.Debug("Programming Service", "service", s.Name, "frontends", len(s.Frontends))
		return d.lb.update(s.Name, s.Frontends)
	})
}

func (o serviceOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, s *state.Service) error {
	d := o.d
	return d.locked(func() error {
		return d.lb.update(s.Name, nil)
	})
}

func (o serviceOps) Prune(_ context.Context, _ statedb.ReadTxn, svcs iter.Seq2[*state.Service, statedb.Revision]) error {
	d := o.d
	return d.locked(func() error {
		syncErr := d.lb.sync(func(yield func(*state.Service) bool) {
			for s := range svcs {
				if !yield(s) {
					return
				}
			}
		})
		if syncErr == nil {
			d.servicesSynced()
		}
		st, err := d.lb.verify()
		if st.total() > 0 {
			d.log.Info("Repaired service maps that drifted from the written state",
				"stray-services", st.Services, "backends", st.Backends, "stray-slots", st.Slots, "frontends-rewritten", st.Frontends)
			for what, n := range map[string]int{"stray service entries": st.Services, "backend entries": st.Backends,
				"stray slot entries": st.Slots, "frontends rewritten": st.Frontends} {
				for range n {
					d.opts.Drifted(datapath.ReconcilerServices, "service maps", what)
				}
			}
		}
		return errors.Join(syncErr, err)
	})
}
