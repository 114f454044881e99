package policy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"glia.dev/glia/internal/state"
)

// Limits are the capacities of the policy maps. A computed policy that
// does not fit is never written in part (a missing identity or exception
// entry could widen what an ipBlock allows): every endpoint some policy
// isolates then denies everything in the directions it is isolated in,
// until the policy fits again, and Error says why.
type Limits struct {
	IPCache  int // glia_ipcache entries
	Policies int // glia_policy entries
}

// Controller computes the node's policy whenever its inputs change and
// writes the result into the ip-identities, policy-entries and
// endpoint-policies tables, which the policy reconcilers put into the
// datapath's maps. Those tables count as initialised once every input
// table is (the Kubernetes watches synced, the endpoints restored) and the
// first result is in: only then may the reconcilers prune what an earlier
// run left in the pinned maps.
type Controller struct {
	log    *slog.Logger
	tables *state.Tables
	node   string
	limits Limits

	current atomic.Pointer[Result]
	mu      sync.Mutex
	err     error
	init    func(statedb.WriteTxn)
}

// NewController registers the controller as the initialiser of its output
// tables. Call it before the reconcilers start.
func NewController(log *slog.Logger, t *state.Tables, localNode string, limits Limits) *Controller {
	c := &Controller{log: log.With("subsys", "policy"), tables: t, node: localNode, limits: limits}
	txn := t.DB.WriteTxn(t.IPIdentities, t.PolicyEntries, t.EndpointPolicies)
	a := t.IPIdentities.RegisterInitializer(txn, "policy")
	b := t.PolicyEntries.RegisterInitializer(txn, "policy")
	e := t.EndpointPolicies.RegisterInitializer(txn, "policy")
	txn.Commit()
	c.init = func(txn statedb.WriteTxn) { a(txn); b(txn); e(txn) }
	return c
}

// Current is the last computed policy (nil before the first).
func (c *Controller) Current() *Result { return c.current.Load() }

// Err is why the last computed policy could not be written, or nil.
func (c *Controller) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Run recomputes on every change of the inputs until ctx ends. Changes
// arriving together (a burst of Pod events) are computed once: after a
// change it waits settle (a few milliseconds) for more.
func (c *Controller) Run(ctx context.Context, settle time.Duration) {
	initialised := false
	for {
		txn := c.tables.DB.ReadTxn()
		in, watches := c.input(txn)
		ready := true
		for _, ok := range []bool{
			initDone(txn, c.tables.Pods), initDone(txn, c.tables.Namespaces), initDone(txn, c.tables.NetworkPolicies),
			initDone(txn, c.tables.Nodes), initDone(txn, c.tables.Endpoints),
		} {
			ready = ready && ok
		}
		if ready {
			c.apply(Compute(in), !initialised)
			initialised = true
		}
		select {
		case <-ctx.Done():
			return
		case <-anyOf(ctx, watches):
		}
		if settle > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(settle):
			}
		}
	}
}

func initDone[Obj any](txn statedb.ReadTxn, t statedb.Table[Obj]) bool {
	ok, _ := t.Initialized(txn)
	return ok
}

// input reads the inputs and the channels that close when they change.
func (c *Controller) input(txn statedb.ReadTxn) (Input, []<-chan struct{}) {
	in := Input{LocalNode: c.node}
	var ws []<-chan struct{}
	pods, w := c.tables.Pods.AllWatch(txn)
	in.Pods = collect(pods)
	ws = append(ws, w)
	nss, w := c.tables.Namespaces.AllWatch(txn)
	in.Namespaces = collect(nss)
	ws = append(ws, w)
	nps, w := c.tables.NetworkPolicies.AllWatch(txn)
	in.Policies = collect(nps)
	ws = append(ws, w)
	nodes, w := c.tables.Nodes.AllWatch(txn)
	in.Nodes = collect(nodes)
	ws = append(ws, w)
	eps, w := c.tables.Endpoints.AllWatch(txn)
	in.Endpoints = collect(eps)
	ws = append(ws, w)
	for _, t := range []interface {
		Initialized(statedb.ReadTxn) (bool, <-chan struct{})
	}{c.tables.Pods, c.tables.Namespaces, c.tables.NetworkPolicies, c.tables.Nodes, c.tables.Endpoints} {
		if ok, w := t.Initialized(txn); !ok {
			ws = append(ws, w)
		}
	}
	return in, ws
}

func collect[Obj any](seq func(func(Obj, statedb.Revision) bool)) []Obj {
	var out []Obj
	for o := range seq {
		out = append(out, o)
	}
	return out
}

// anyOf closes when one of ws closes (or ctx ends).
func anyOf(ctx context.Context, ws []<-chan struct{}) <-chan struct{} {
	out := make(chan struct{})
	done := make(chan struct{})
	var once sync.Once
	for _, w := range ws {
		go func() {
			select {
			case <-w:
			case <-ctx.Done():
			case <-done:
				return
			}
			once.Do(func() { close(out) })
		}()
	}
	go func() {
		select {
		case <-out:
		case <-ctx.Done():
		}
		close(done)
	}()
	return out
}

// apply writes a result into the output tables, in one transaction.
func (c *Controller) apply(r *Result, first bool) {
	var err error
	if c.limits.IPCache > 0 && len(r.IPCache) > c.limits.IPCache {
		err = fmt.Errorf("the policy needs %d address → identity entries and glia_ipcache holds %d: fewer pod label sets, pods or ipBlocks must be in use for it to fit", len(r.IPCache), c.limits.IPCache)
	} else if c.limits.Policies > 0 && len(r.Entries) > c.limits.Policies {
		err = fmt.Errorf("the policy needs %d policy entries and glia_policy holds %d: fewer or simpler NetworkPolicies must be in use for it to fit", len(r.Entries), c.limits.Policies)
	}
	eps := r.Endpoints
	if err != nil {
		// Fail closed: isolated endpoints deny everything; the maps keep
		// what they hold (the entries of no endpoint's policy any more):
		// the address and entry tables are left as last written.
		eps = make([]*state.EndpointPolicy, len(r.Endpoints))
		for i, e := range r.Endpoints {
			e = e.Clone()
			if e.Flags != 0 {
				e.PolicyID = 0
				e.Waiting = "policy maps full: " + err.Error()
			}
			eps[i] = e
		}
	}
	c.mu.Lock()
	if (err == nil) != (c.err == nil) {
		if err != nil {
			c.log.Error("Policy does not fit the maps: isolated endpoints deny everything until it does", "error", err)
		} else {
			c.log.Info("Policy fits the maps again")
		}
	}
	c.err = err
	c.mu.Unlock()

	db := c.tables.DB
	txn := db.WriteTxn(c.tables.IPIdentities, c.tables.PolicyEntries, c.tables.EndpointPolicies)
	if err == nil {
		replace(txn, c.tables.IPIdentities, r.IPCache, func(a, b *state.IPIdentity) bool { return a.Identity == b.Identity })
		replace(txn, c.tables.PolicyEntries, r.Entries, func(a, b *state.PolicyEntry) bool { return a.RuleRef == b.RuleRef && a.Rule == b.Rule })
	}
	replace(txn, c.tables.EndpointPolicies, eps, (*state.EndpointPolicy).Same)
	if first {
		c.init(txn)
	}
	txn.Commit()
	c.current.Store(r)
	if first {
		c.log.Info("Network policy computed", "identities", len(r.Identities), "ipcache", len(r.IPCache),
			"entries", len(r.Entries), "endpoints", len(r.Endpoints), "isolated", r.Selected())
	}
}

type statusObject[T any] interface {
	comparable
	Clone() T
	SetStatus(reconciler.Status) T
}

// replace makes tbl hold exactly objs within txn: new and changed objects
// go in pending, others are deleted, equal ones stay as they are.
func replace[Obj statusObject[Obj]](txn statedb.WriteTxn, tbl statedb.RWTable[Obj], objs []Obj, same func(a, b Obj) bool) {
	idx := tbl.PrimaryIndexer()
	keep := make(map[string]bool, len(objs))
	for _, o := range objs {
		key, _ := idx.ObjectToKey(o)
		keep[string(key)] = true
		if q, ok := idx.QueryFromObject(o); ok {
			if old, _, found := tbl.Get(txn, q); found && same(old, o) {
				continue
			}
		}
		tbl.Insert(txn, o.Clone().SetStatus(reconciler.StatusPending()))
	}
	var gone []Obj
	for o := range tbl.All(txn) {
		key, _ := idx.ObjectToKey(o)
		if !keep[string(key)] {
			gone = append(gone, o)
		}
	}
	for _, o := range slices.Clip(gone) {
		tbl.Delete(txn, o)
	}
}
