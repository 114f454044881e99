// Package state is the agent's desired state: typed tables in a
// cilium/statedb database, written by the edges (the Kubernetes watchers,
// the endpoint manager serving the CNI plugin, the agent's own start) and
// read by the reconcilers that drive the kernel toward it (package
// reconcile) and by status, metrics and health. Beside the reconciled
// tables, one row holds the node's resolved config and the datapath
// decision made from it (Decision).
//
// Values are typed (netip.Addr, netip.Prefix, net.HardwareAddr), parsed
// once where they enter the agent and never again. Objects in a table are
// immutable: to change one, copy it (Clone), change the copy and insert
// it. Every reconciled object carries its reconciliation Status (pending,
// done or error with the error), which `glia status`, the metrics and the
// agent's readiness read.
//
// The flow, one way:
//
//	Kubernetes, CNI (socket API) → state tables → reconcilers → kernel
//	                                     ↘ status, metrics, health
package state

import (
	"fmt"

	"github.com/cilium/statedb"
)

// Table names.
const (
	TableEndpoints  = "endpoints"
	TableServices   = "services"
	TableNodes      = "nodes"
	TableSysctls    = "sysctls"
	TableMasquerade = "masquerade"
	TablePrograms   = "programs"
	TableDecision   = "decision"

	TablePods             = "pods"
	TableNamespaces       = "namespaces"
	TableNetworkPolicies  = "network-policies"
	TableIPIdentities     = "ip-identities"
	TablePolicyEntries    = "policy-entries"
	TableEndpointPolicies = "endpoint-policies"
)

// Tables is the desired-state database and its tables.
type Tables struct {
	DB         *statedb.DB
	Endpoints  statedb.RWTable[*Endpoint]
	Services   statedb.RWTable[*Service]
	Nodes      statedb.RWTable[*Node]
	Sysctls    statedb.RWTable[*Sysctl]
	Masquerade statedb.RWTable[*MasqueradeRule]
	Programs   statedb.RWTable[*Program]
	Decision   statedb.RWTable[*Decision]

	// Network policy: the inputs (from Kubernetes, cluster-wide) and what
	// package policy computes from them for this node (reconciled).
	Pods             statedb.RWTable[*Pod]
	Namespaces       statedb.RWTable[*Namespace]
	NetworkPolicies  statedb.RWTable[*NetworkPolicy]
	IPIdentities     statedb.RWTable[*IPIdentity]
	PolicyEntries    statedb.RWTable[*PolicyEntry]
	EndpointPolicies statedb.RWTable[*EndpointPolicy]
}

// New creates the database with every table. Start it with
// Tables.DB.Start and stop it with DB.Stop.
func New() (*Tables, error) {
	db := statedb.New()
	t := &Tables{DB: db}
	var err error
	if t.Endpoints, err = statedb.NewTable(db, TableEndpoints, EndpointByAttachment, EndpointByIP); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableEndpoints, err)
	}
	if t.Services, err = statedb.NewTable(db, TableServices, ServiceByName); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableServices, err)
	}
	if t.Nodes, err = statedb.NewTable(db, TableNodes, NodeByName); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableNodes, err)
	}
	if t.Sysctls, err = statedb.NewTable(db, TableSysctls, SysctlByName); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableSysctls, err)
	}
	if t.Masquerade, err = statedb.NewTable(db, TableMasquerade, MasqueradeByName); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableMasquerade, err)
	}
	if t.Programs, err = statedb.NewTable(db, TablePrograms, ProgramByName); err != nil {
		return nil, fmt.Errorf("table %s: %w", TablePrograms, err)
	}
	if t.Decision, err = statedb.NewTable(db, TableDecision, DecisionByNode); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableDecision, err)
	}
	if t.Pods, err = statedb.NewTable(db, TablePods, PodByName); err != nil {
		return nil, fmt.Errorf("table %s: %w", TablePods, err)
	}
	if t.Namespaces, err = statedb.NewTable(db, TableNamespaces, NamespaceByName); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableNamespaces, err)
	}
	if t.NetworkPolicies, err = statedb.NewTable(db, TableNetworkPolicies, PolicyByName); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableNetworkPolicies, err)
	}
	if t.IPIdentities, err = statedb.NewTable(db, TableIPIdentities, IPIdentityByPrefix); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableIPIdentities, err)
	}
	if t.PolicyEntries, err = statedb.NewTable(db, TablePolicyEntries, PolicyEntryByKey); err != nil {
		return nil, fmt.Errorf("table %s: %w", TablePolicyEntries, err)
	}
	if t.EndpointPolicies, err = statedb.NewTable(db, TableEndpointPolicies, EndpointPolicyByIP); err != nil {
		return nil, fmt.Errorf("table %s: %w", TableEndpointPolicies, err)
	}
	return t, nil
}

// Decided returns the decision row, if the agent has written it.
func (t *Tables) Decided() (*Decision, bool) {
	for d := range t.Decision.All(t.DB.ReadTxn()) {
		return d, true
	}
	return nil, false
}

// Replace makes tbl hold exactly objs (matched by primary key): new and
// changed objects are inserted (pending), objects not in objs deleted,
// equal ones left alone, in one transaction. same compares an object in
// the table with its replacement, ignoring the status.
func Replace[Obj any](db *statedb.DB, tbl statedb.RWTable[Obj], objs []Obj, same func(a, b Obj) bool) {
	txn := db.WriteTxn(tbl)
	defer txn.Commit()
	keep := make(map[string]bool, len(objs))
	idx := tbl.PrimaryIndexer()
	for _, o := range objs {
		key, _ := idx.ObjectToKey(o)
		keep[string(key)] = true
		if q, ok := idx.QueryFromObject(o); ok {
			if old, _, found := tbl.Get(txn, q); found && same(old, o) {
				continue
			}
		}
		tbl.Insert(txn, o)
	}
	for o := range tbl.All(txn) {
		key, _ := idx.ObjectToKey(o)
		if !keep[string(key)] {
			tbl.Delete(txn, o)
		}
	}
}
