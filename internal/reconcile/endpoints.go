package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/state"
)

// Endpoints writes the endpoints table for the endpoint manager and waits
// for the endpoint reconciler: a CNI ADD answers once its pod is
// programmed (or the programming failed), a DEL once its state is gone.
type Endpoints struct {
	tables  *state.Tables
	set     *Set
	restore func(statedb.WriteTxn)
	// Policy, when set, is waited for after an endpoint is programmed:
	// its network policy in place (the agent's).
	Policy func(context.Context, *state.Endpoint) error
}

// NewEndpoints registers the restore as what initialises the endpoints
// table: until the endpoint manager has handed over the live endpoints,
// the endpoint reconciler prunes nothing. Call it before the reconcilers
// start, and Bind the running set.
func NewEndpoints(t *state.Tables) *Endpoints {
	txn := t.DB.WriteTxn(t.Endpoints)
	done := t.Endpoints.RegisterInitializer(txn, "restore")
	txn.Commit()
	return &Endpoints{tables: t, restore: done}
}

// Bind gives the running reconcilers, for Remove to wait on.
func (e *Endpoints) Bind(s *Set) { e.set = s }

// Program implements endpoint.Datapath.
func (e *Endpoints) Program(ctx context.Context, ep *state.Endpoint) error {
	ep = ep.Clone()
	ep.Status = reconciler.StatusPending()
	txn := e.tables.DB.WriteTxn(e.tables.Endpoints)
	if _, _, err := e.tables.Endpoints.Insert(txn, ep); err != nil {
		txn.Abort()
		return fmt.Errorf("endpoint %s: %w", ep.Attachment, err)
	}
	txn.Commit()
	if err := WaitDone(ctx, e.tables.DB, e.tables.Endpoints, state.EndpointByAttachment.Query(ep.Attachment), ep.Status.ID); err != nil {
		return err
	}
	if e.Policy != nil {
		return e.Policy(ctx, ep)
	}
	return nil
}

// Remove implements endpoint.Datapath.
func (e *Endpoints) Remove(ctx context.Context, a state.Attachment) error {
	txn := e.tables.DB.WriteTxn(e.tables.Endpoints)
	old, _, found := e.tables.Endpoints.Get(txn, state.EndpointByAttachment.Query(a))
	if !found {
		txn.Abort()
		return nil
	}
	if _, _, err := e.tables.Endpoints.Delete(txn, old); err != nil {
		txn.Abort()
		return fmt.Errorf("endpoint %s: %w", a, err)
	}
	rev := e.tables.Endpoints.Revision(txn)
	txn.Commit()
	if e.set == nil {
		return errors.New("endpoint reconciler not running")
	}
	return e.set.WaitReconciled(ctx, datapath.ReconcilerEndpoints, rev)
}

// Restored implements endpoint.Datapath: the live endpoints go in, and
// the table counts as initialised.
func (e *Endpoints) Restored(eps []*state.Endpoint) {
	txn := e.tables.DB.WriteTxn(e.tables.Endpoints)
	for _, ep := range eps {
		ep = ep.Clone()
		ep.Status = reconciler.StatusPending()
		e.tables.Endpoints.Insert(txn, ep)
	}
	e.restore(txn)
	txn.Commit()
}

// WaitDone waits until the object q finds has been reconciled since it was
// inserted with the pending status id: nil when done, its error when the
// reconciler failed (it goes on retrying in the background).
func WaitDone[Obj Object[Obj]](ctx context.Context, db *statedb.DB, tbl statedb.Table[Obj], q statedb.Query[Obj], id uint64) error {
	for {
		o, _, watch, found := tbl.GetWatch(db.ReadTxn(), q)
		if !found {
			return errors.New("removed while being programmed")
		}
		st := o.GetStatus()
		if st.ID != id || !st.IsPendingOrRefreshing() {
			switch st.Kind {
			case reconciler.StatusKindDone:
				return nil
			case reconciler.StatusKindError:
				return errors.New(st.GetError())
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the datapath: %w", ctx.Err())
		case <-watch:
		}
	}
}
