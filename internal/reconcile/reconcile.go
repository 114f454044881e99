// Package reconcile runs the agent's reconcilers: one
// github.com/cilium/statedb/reconciler per desired-state table (package
// state), each driving one kind of kernel object through the operations
// the datapath gives (package datapath). The pattern is the same for every
// kind — routes, neighbour entries, BPF map entries, program attachments,
// the iptables masquerade rule, sysctls:
//
//   - incremental: a changed object is reconciled on its own, at once;
//   - refresh: every object is re-checked against the kernel every
//     refresh period, and what drifted is repaired and counted (metric
//     glia_reconcile_repairs_total);
//   - prune: what glia owns and the table no longer holds is removed, and
//     nothing else, once the table is initialised and every prune period;
//   - per object: its status (pending, done, error with the error) is
//     kept on the object, which `glia status`, the metrics and readiness
//     read; a failed object is retried with exponential back-off, alone.
//
// The reconcilers run on a small hive (github.com/cilium/hive), as the
// library expects; the agent's own wiring stays explicit (package agent).
package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/cilium/hive"
	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"golang.org/x/time/rate"
)

// Object is what a reconciled table holds: an immutable object (a pointer)
// that carries its reconciliation status.
type Object[T any] interface {
	comparable
	GetStatus() reconciler.Status
	SetStatus(reconciler.Status) T
	Clone() T
}

// Periods of one reconciler.
type Periods struct {
	// Refresh re-checks every object against the kernel this often;
	// 0: never (the table's Prune does the checking).
	Refresh time.Duration
	// Prune removes what glia owns and the table does not hold this often,
	// besides once when the table is initialised; 0: only then.
	Prune time.Duration
	// RetryMin and RetryMax bound the back-off of a failed object.
	RetryMin, RetryMax time.Duration
}

// Spec is one reconciler to run.
type Spec struct {
	name     string
	register func(p reconciler.Params) (waiter, error)
	summary  func(txn statedb.ReadTxn) Summary
}

type waiter interface {
	WaitUntilReconciled(ctx context.Context, rev statedb.Revision) (statedb.Revision, statedb.Revision, error)
	Prune()
}

// For describes the reconciler called name of tbl through ops.
func For[Obj Object[Obj]](name string, tbl statedb.RWTable[Obj], ops reconciler.Operations[Obj], p Periods) Spec {
	opts := []reconciler.Option{reconciler.WithName(name)}
	if p.RetryMin > 0 {
		opts = append(opts, reconciler.WithRetry(p.RetryMin, p.RetryMax))
	}
	if p.Refresh > 0 {
		opts = append(opts, reconciler.WithRefreshing(p.Refresh, rate.NewLimiter(100, 10)))
	} else {
		opts = append(opts, reconciler.WithRefreshing(0, nil))
	}
	if p.Prune > 0 {
		opts = append(opts, reconciler.WithPruning(p.Prune))
	} else {
		// Pruning still runs when the table is initialised, and on demand.
		opts = append(opts, reconciler.WithPruning(24*time.Hour))
	}
	return Spec{
		name: name,
		register: func(params reconciler.Params) (waiter, error) {
			return reconciler.Register(params, tbl,
				func(o Obj) Obj { return o.Clone() },
				func(o Obj, s reconciler.Status) Obj { return o.SetStatus(s) },
				func(o Obj) reconciler.Status { return o.GetStatus() },
				ops, nil, opts...)
		},
		summary: func(txn statedb.ReadTxn) Summary {
			s := Summary{Name: name}
			idx := tbl.PrimaryIndexer()
			for o := range tbl.All(txn) {
				s.Objects++
				st := o.GetStatus()
				switch st.Kind {
				case reconciler.StatusKindDone:
					s.Done++
				case reconciler.StatusKindError:
					s.Errors++
					if len(s.Failing) < maxFailing {
						key, _ := idx.ObjectToKey(o)
						s.Failing = append(s.Failing, fmt.Sprintf("%s: %s", key, st.GetError()))
					}
				default:
					s.Pending++
				}
			}
			return s
		},
	}
}

// maxFailing bounds the failing objects a Summary names.
const maxFailing = 5

// Summary is what one reconciler's table says of its objects.
type Summary struct {
	Name    string
	Objects int
	Done    int
	Pending int
	Errors  int
	// Failing names up to 5 objects in error, "key: error".
	Failing []string
}

// Set is the agent's running reconcilers.
type Set struct {
	db    *statedb.DB
	log   *slog.Logger
	hive  *hive.Hive
	specs []Spec

	mu      sync.Mutex
	waiters map[string]waiter
}

// Start registers and starts the reconcilers of specs on the tables of db.
func Start(ctx context.Context, log *slog.Logger, db *statedb.DB, specs ...Spec) (*Set, error) {
	s := &Set{db: db, log: log, specs: specs, waiters: map[string]waiter{}}
	s.hive = hive.New(
		cell.Provide(func() *statedb.DB { return db }),
		job.Cell,
		cell.SimpleHealthCell,
		cell.Module("reconcilers", "glia kernel reconcilers",
			cell.Provide(func(r job.Registry, h cell.Health) job.Group { return r.NewGroup(h) }),
			cell.Invoke(func(p reconciler.Params) error {
				for _, spec := range specs {
					w, err := spec.register(p)
					if err != nil {
						return fmt.Errorf("reconciler %s: %w", spec.name, err)
					}
					s.waiters[spec.name] = w
				}
				return nil
			}),
		),
	)
	// The hive's own start and stop lines are of no use to a reader of the
	// agent's log.
	if err := s.hive.Start(quiet(log), ctx); err != nil {
		return nil, fmt.Errorf("start reconcilers: %w", err)
	}
	return s, nil
}

// Stop stops every reconciler.
func (s *Set) Stop(ctx context.Context) error { return s.hive.Stop(quiet(s.log), ctx) }

// Summaries lists every reconciler's table, by name.
func (s *Set) Summaries() []Summary {
	txn := s.db.ReadTxn()
	out := make([]Summary, 0, len(s.specs))
	for _, spec := range s.specs {
		out = append(out, spec.summary(txn))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// WaitReconciled waits until the reconciler called name has processed
// every change of its table up to revision rev (a deletion, say).
func (s *Set) WaitReconciled(ctx context.Context, name string, rev statedb.Revision) error {
	s.mu.Lock()
	w, ok := s.waiters[name]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("no reconciler %s", name)
	}
	_, _, err := w.WaitUntilReconciled(ctx, rev)
	return err
}

// Prune asks the reconciler called name to prune now.
func (s *Set) Prune(name string) {
	s.mu.Lock()
	w, ok := s.waiters[name]
	s.mu.Unlock()
	if ok {
		w.Prune()
	}
}

// quiet drops the hive's Info lines (start, stop) and keeps its warnings.
func quiet(log *slog.Logger) *slog.Logger {
	return slog.New(levelFilter{log.Handler(), slog.LevelWarn})
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

func (f levelFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return levelFilter{f.Handler.WithAttrs(as), f.min}
}

func (f levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{f.Handler.WithGroup(n), f.min}
}
