package state

import (
	"net/netip"
	"strconv"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
)

// Node is a node of the cluster as the datapath routes to it: its address
// and pod CIDR. The node the agent runs on is in the table too (Local),
// for health probing; the datapath routes only to the others.
type Node struct {
	Name    string
	IP      netip.Addr   // InternalIP (IPv4)
	PodCIDR netip.Prefix // invalid until kube-controller-manager allocates one
	Local   bool

	Status reconciler.Status
}

// Clone returns a copy.
func (n *Node) Clone() *Node { c := *n; return &c }

// Same compares two nodes, status aside.
func (n *Node) Same(o *Node) bool {
	return n.Name == o.Name && n.IP == o.IP && n.PodCIDR == o.PodCIDR && n.Local == o.Local
}

// TableHeader implements statedb.TableWritable.
func (*Node) TableHeader() []string { return []string{"Name", "IP", "PodCIDR", "Local", "Status"} }

// TableRow implements statedb.TableWritable.
func (n *Node) TableRow() []string {
	return []string{n.Name, n.IP.String(), n.PodCIDR.String(), strconv.FormatBool(n.Local), n.Status.String()}
}

// GetStatus gives the reconciler the node's status.
func (n *Node) GetStatus() reconciler.Status { return n.Status }

// SetStatus sets the status on n (a clone the reconciler made) and returns it.
func (n *Node) SetStatus(s reconciler.Status) *Node { n.Status = s; return n }

// NodeByName is the primary index.
var NodeByName = statedb.Index[*Node, string]{
	Name:       "name",
	FromObject: func(n *Node) index.KeySet { return index.NewKeySet(index.String(n.Name)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}
