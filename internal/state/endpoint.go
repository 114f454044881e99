package state

import (
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
)

// Attachment names one pod interface: the CNI (container ID, interface
// name) pair. It is valid by construction where the agent makes one (the
// socket API validates the wire form once).
type Attachment struct {
	ContainerID string
	IfName      string
}

// Key is "<containerID>/<ifName>", the IPAM owner of the attachment's
// address.
func (a Attachment) Key() string { return a.ContainerID + "/" + a.IfName }

func (a Attachment) String() string { return a.Key() }

// Endpoint is a local pod interface (or the node's health endpoint) the
// datapath must reach: its address routed to its host-side veth, its
// entry in the endpoint map and its program on the veth (eBPF).
type Endpoint struct {
	Attachment
	IP           netip.Addr
	Netns        string // path of the pod's network namespace
	HostIfName   string // host side of the veth, in the node's namespace
	HostIfIndex  int
	HostMAC      net.HardwareAddr
	PodMAC       net.HardwareAddr // "" when not known: read from the pod's namespace
	PodNamespace string
	PodName      string
	Created      time.Time

	Status reconciler.Status
}

// Clone returns a shallow copy (the slices are never mutated).
func (e *Endpoint) Clone() *Endpoint { c := *e; return &c }

// Same says whether two endpoints want the same kernel state and describe
// the same pod (status aside).
func (e *Endpoint) Same(o *Endpoint) bool {
	return e.Attachment == o.Attachment && e.IP == o.IP && e.Netns == o.Netns && e.HostIfName == o.HostIfName &&
		e.HostIfIndex == o.HostIfIndex && e.HostMAC.String() == o.HostMAC.String() && e.PodMAC.String() == o.PodMAC.String() &&
		e.PodNamespace == o.PodNamespace && e.PodName == o.PodName && e.Created.Equal(o.Created)
}

// Pod is "namespace/name", or "-" when not known.
func (e *Endpoint) Pod() string {
	if e.PodName == "" {
		return "-"
	}
	return e.PodNamespace + "/" + e.PodName
}

// TableHeader implements statedb.TableWritable.
func (*Endpoint) TableHeader() []string {
	return []string{"Attachment", "IP", "HostIf", "Pod", "Status"}
}

// TableRow implements statedb.TableWritable.
func (e *Endpoint) TableRow() []string {
	return []string{e.Key(), e.IP.String(), e.HostIfName + "(" + strconv.Itoa(e.HostIfIndex) + ")", e.Pod(), e.Status.String()}
}

// GetStatus and SetStatus give the reconciler the endpoint's status.
func (e *Endpoint) GetStatus() reconciler.Status { return e.Status }

// SetStatus sets the status on e (a clone the reconciler made) and returns it.
func (e *Endpoint) SetStatus(s reconciler.Status) *Endpoint { e.Status = s; return e }

// EndpointByAttachment is the primary index: the attachment key.
var EndpointByAttachment = statedb.Index[*Endpoint, Attachment]{
	Name:       "attachment",
	FromObject: func(e *Endpoint) index.KeySet { return index.NewKeySet(index.String(e.Key())) },
	FromKey:    func(a Attachment) index.Key { return index.String(a.Key()) },
	FromString: index.FromString,
	Unique:     true,
}

// EndpointByIP finds the endpoint holding an address.
var EndpointByIP = statedb.Index[*Endpoint, netip.Addr]{
	Name:       "ip",
	FromObject: func(e *Endpoint) index.KeySet { return index.NewKeySet(index.NetIPAddr(e.IP)) },
	FromKey:    index.NetIPAddr,
	FromString: index.NetIPAddrString,
	Unique:     true,
}
