package datapath

import (
	"context"
	"iter"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/state"
)

// Refreshing says whether the reconciler is re-checking an object it
// programmed before (a periodic refresh), as opposed to programming a new
// or changed one: only then is a difference drift.
func Refreshing(s reconciler.Status) bool { return s.Kind == reconciler.StatusKindRefreshing }

// SysctlOps reconciles state.Sysctls for both datapaths. Deleting a row
// leaves the setting as it is: glia does not know what it was before.
type SysctlOps struct{ Opts Options }

var _ reconciler.Operations[*state.Sysctl] = SysctlOps{}

// Update implements reconciler.Operations.
func (o SysctlOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, s *state.Sysctl) error {
	changed, err := linux.EnsureSysctl(s.Name, s.Value)
	if changed && Refreshing(s.Status) {
		o.Opts.Drifted(ReconcilerSysctls, s.Name, "was not "+s.Value)
	}
	return err
}

// Delete implements reconciler.Operations.
func (SysctlOps) Delete(context.Context, statedb.ReadTxn, statedb.Revision, *state.Sysctl) error {
	return nil
}

// Prune implements reconciler.Operations: nothing to prune.
func (SysctlOps) Prune(context.Context, statedb.ReadTxn, iter.Seq2[*state.Sysctl, statedb.Revision]) error {
	return nil
}

// MasqueradeOps reconciles the iptables masquerade rule for both
// datapaths: the table holds it when iptables masquerades; pruning removes
// glia's chain otherwise.
type MasqueradeOps struct{ Opts Options }

var _ reconciler.Operations[*state.MasqueradeRule] = MasqueradeOps{}

// Update implements reconciler.Operations.
func (o MasqueradeOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, m *state.MasqueradeRule) error {
	changed, err := linux.EnsureMasquerade(m.PodCIDR, m.ClusterCIDR)
	if changed && Refreshing(m.Status) {
		o.Opts.Drifted(ReconcilerMasquerade, m.Name(), "glia's chain, its rule or its jump was missing or changed")
	}
	return err
}

// Delete implements reconciler.Operations.
func (MasqueradeOps) Delete(context.Context, statedb.ReadTxn, statedb.Revision, *state.MasqueradeRule) error {
	_, err := linux.RemoveMasquerade()
	return err
}

// Prune implements reconciler.Operations: without a desired rule (BPF
// masquerading, or none), glia's chain goes.
func (MasqueradeOps) Prune(_ context.Context, _ statedb.ReadTxn, objs iter.Seq2[*state.MasqueradeRule, statedb.Revision]) error {
	for range objs {
		return nil
	}
	_, err := linux.RemoveMasquerade()
	return err
}
