package state

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/index"
	"github.com/cilium/statedb/reconciler"
	"k8s.io/apimachinery/pkg/labels"
)

// Network policy: the Kubernetes objects it is computed from (Pods and
// Namespaces of the whole cluster, NetworkPolicies), typed at the edge,
// and what package policy computes from them for this node — the
// address → identity entries, the policy entries and each local
// endpoint's policy — which the policy reconcilers write into the
// datapath's maps.

// Pod is a pod of the cluster as policy sees it: where it is, its labels
// and its named ports.
type Pod struct {
	Namespace   string
	Name        string
	Labels      map[string]string // never mutated
	IP          netip.Addr        // invalid until the pod has one
	NodeName    string
	HostNetwork bool
	Ports       []NamedPort // named container ports, sorted
}

// NamedPort is a named container port.
type NamedPort struct {
	Name     string
	Protocol string // TCP, UDP or SCTP
	Port     uint16
}

// Key is "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Same compares two pods field by field.
func (p *Pod) Same(o *Pod) bool {
	return p.Namespace == o.Namespace && p.Name == o.Name && maps.Equal(p.Labels, o.Labels) && p.IP == o.IP &&
		p.NodeName == o.NodeName && p.HostNetwork == o.HostNetwork && slices.Equal(p.Ports, o.Ports)
}

// TableHeader implements statedb.TableWritable.
func (*Pod) TableHeader() []string { return []string{"Pod", "IP", "Node", "Labels"} }

// TableRow implements statedb.TableWritable.
func (p *Pod) TableRow() []string {
	return []string{p.Key(), p.IP.String(), p.NodeName, labels.Set(p.Labels).String()}
}

// PodByName is the primary index: "namespace/name".
var PodByName = statedb.Index[*Pod, string]{
	Name:       "name",
	FromObject: func(p *Pod) index.KeySet { return index.NewKeySet(index.String(p.Key())) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// Namespace is a namespace and its labels.
type Namespace struct {
	Name   string
	Labels map[string]string // never mutated
}

// TableHeader implements statedb.TableWritable.
func (*Namespace) TableHeader() []string { return []string{"Namespace", "Labels"} }

// TableRow implements statedb.TableWritable.
func (n *Namespace) TableRow() []string { return []string{n.Name, labels.Set(n.Labels).String()} }

// NamespaceByName is the primary index.
var NamespaceByName = statedb.Index[*Namespace, string]{
	Name:       "name",
	FromObject: func(n *Namespace) index.KeySet { return index.NewKeySet(index.String(n.Name)) },
	FromKey:    index.String,
	FromString: index.FromString,
	Unique:     true,
}

// Selector is a parsed label selector.
type Selector struct {
	labels.Selector
	Text string // the selector as written, "" for the empty one (which matches everything)
}

// Matches says whether the selector matches a label set.
func (s Selector) Matches(l map[string]string) bool { return s.Selector.Matches(labels.Set(l)) }

func (s Selector) String() string {
	if s.Text == "" {
		return "{}"
	}
	return s.Text
}

// IPBlock is a CIDR and the ranges it excepts.
type IPBlock struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

func (b IPBlock) String() string {
	s := b.CIDR.String()
	if len(b.Except) > 0 {
		ex := make([]string, len(b.Except))
		for i, e := range b.Except {
			ex[i] = e.String()
		}
		s += " except " + strings.Join(ex, ",")
	}
	return s
}

// Peer is one element of a rule's from or to: pods chosen by a pod
// selector (in the policy's namespace), by a namespace selector (every
// pod of the matching namespaces), both (the pods matching the pod
// selector in the matching namespaces), or an IP block.
type Peer struct {
	Pods       *Selector
	Namespaces *Selector
	IPBlock    *IPBlock
}

func (p Peer) String() string {
	switch {
	case p.IPBlock != nil:
		return "ipBlock " + p.IPBlock.String()
	case p.Pods != nil && p.Namespaces != nil:
		return "pods " + p.Pods.String() + " in namespaces " + p.Namespaces.String()
	case p.Namespaces != nil:
		return "namespaces " + p.Namespaces.String()
	case p.Pods != nil:
		return "pods " + p.Pods.String()
	}
	return "-"
}

// PolicyPort is one element of a rule's ports: a protocol and a port
// number (Port, with EndPort for a range), a port name (resolved on the
// destination pod), or neither (every port of the protocol).
type PolicyPort struct {
	Protocol string // TCP, UDP or SCTP
	Port     uint16 // 0: every port (unless Name)
	EndPort  uint16 // 0: a single port
	Name     string // a named port
}

func (p PolicyPort) String() string {
	switch {
	case p.Name != "":
		return p.Protocol + "/" + p.Name
	case p.Port == 0:
		return p.Protocol + "/*"
	case p.EndPort != 0:
		return fmt.Sprintf("%s/%d-%d", p.Protocol, p.Port, p.EndPort)
	}
	return p.Protocol + "/" + strconv.Itoa(int(p.Port))
}

// PolicyRule is one ingress or egress rule. No peers: every peer; no
// ports: every port of every protocol.
type PolicyRule struct {
	Peers []Peer
	Ports []PolicyPort
}

// PolicyName names a NetworkPolicy.
type PolicyName struct {
	Namespace string
	Name      string
}

func (n PolicyName) String() string { return n.Namespace + "/" + n.Name }

// NetworkPolicy is a networking.k8s.io/v1 NetworkPolicy, parsed.
type NetworkPolicy struct {
	Name     PolicyName
	Pods     Selector // spec.podSelector, in the policy's namespace
	Ingress  []PolicyRule
	Egress   []PolicyRule
	Isolates struct{ Ingress, Egress bool } // spec.policyTypes, defaulted
	// Generation is the object's metadata.generation (for `glia policy get`).
	Generation int64
}

// TableHeader implements statedb.TableWritable.
func (*NetworkPolicy) TableHeader() []string {
	return []string{"Policy", "PodSelector", "Ingress", "Egress"}
}

// TableRow implements statedb.TableWritable.
func (p *NetworkPolicy) TableRow() []string {
	in, eg := "-", "-"
	if p.Isolates.Ingress {
		in = strconv.Itoa(len(p.Ingress)) + " rules"
	}
	if p.Isolates.Egress {
		eg = strconv.Itoa(len(p.Egress)) + " rules"
	}
	return []string{p.Name.String(), p.Pods.String(), in, eg}
}

// PolicyByName is the primary index.
var PolicyByName = statedb.Index[*NetworkPolicy, PolicyName]{
	Name:       "name",
	FromObject: func(p *NetworkPolicy) index.KeySet { return index.NewKeySet(index.String(p.Name.String())) },
	FromKey:    func(n PolicyName) index.Key { return index.String(n.String()) },
	FromString: index.FromString,
	Unique:     true,
}

// IPIdentity maps a prefix (a pod's or node's /32, or a CIDR of some
// policy's ipBlock) to the security identity of the addresses whose
// longest match it is: glia_ipcache.
type IPIdentity struct {
	Prefix   netip.Prefix
	Identity uint32

	Status reconciler.Status
}

// Clone returns a copy.
func (e *IPIdentity) Clone() *IPIdentity { c := *e; return &c }

// GetStatus gives the reconciler the entry's status.
func (e *IPIdentity) GetStatus() reconciler.Status { return e.Status }

// SetStatus sets the status on e (a clone) and returns it.
func (e *IPIdentity) SetStatus(s reconciler.Status) *IPIdentity { e.Status = s; return e }

// TableHeader implements statedb.TableWritable.
func (*IPIdentity) TableHeader() []string { return []string{"Prefix", "Identity", "Status"} }

// TableRow implements statedb.TableWritable.
func (e *IPIdentity) TableRow() []string {
	return []string{e.Prefix.String(), strconv.FormatUint(uint64(e.Identity), 10), e.Status.String()}
}

// IPIdentityByPrefix is the primary index.
var IPIdentityByPrefix = statedb.Index[*IPIdentity, netip.Prefix]{
	Name:       "prefix",
	FromObject: func(e *IPIdentity) index.KeySet { return index.NewKeySet(index.NetIPPrefix(e.Prefix)) },
	FromKey:    index.NetIPPrefix,
	FromString: index.NetIPPrefixString,
	Unique:     true,
}

// Traffic directions, relative to the endpoint the policy is for.
const (
	DirIngress uint8 = 0
	DirEgress  uint8 = 1
)

// PolicyKey is one allow entry of glia_policy: for the endpoints whose
// policy is PolicyID, traffic in direction Dir with the peer Identity
// (0: any peer), protocol Proto (0: any, and then every port) and a port
// in the PortBits-bit prefix of Port (0 bits: every port).
type PolicyKey struct {
	PolicyID uint16
	Dir      uint8
	Identity uint32
	Proto    uint8
	Port     uint16
	PortBits uint8
}

func (k PolicyKey) String() string {
	dir := "ingress"
	if k.Dir == DirEgress {
		dir = "egress"
	}
	peer := "any"
	if k.Identity != 0 {
		peer = strconv.FormatUint(uint64(k.Identity), 10)
	}
	port := "*"
	if k.Proto != 0 && k.PortBits > 0 {
		lo := k.Port
		hi := lo | uint16((uint32(1)<<(16-uint32(k.PortBits)))-1)
		port = strconv.Itoa(int(lo))
		if hi != lo {
			port += "-" + strconv.Itoa(int(hi))
		}
	}
	proto := "any"
	switch k.Proto {
	case 6:
		proto = "TCP"
	case 17:
		proto = "UDP"
	case 132:
		proto = "SCTP"
	}
	return fmt.Sprintf("policy=%d %s peer=%s %s/%s", k.PolicyID, dir, peer, proto, port)
}

// PolicyEntry is one row of glia_policy.
type PolicyEntry struct {
	Key PolicyKey
	// Rule is the rule that allows it: "namespace/name ingress[i]" (the
	// first, when several do).
	Rule string
	// RuleRef numbers Rule in the map's value (for `glia bpf policy`).
	RuleRef uint32

	Status reconciler.Status
}

// Clone returns a copy.
func (e *PolicyEntry) Clone() *PolicyEntry { c := *e; return &c }

// GetStatus gives the reconciler the entry's status.
func (e *PolicyEntry) GetStatus() reconciler.Status { return e.Status }

// SetStatus sets the status on e (a clone) and returns it.
func (e *PolicyEntry) SetStatus(s reconciler.Status) *PolicyEntry { e.Status = s; return e }

// TableHeader implements statedb.TableWritable.
func (*PolicyEntry) TableHeader() []string { return []string{"Key", "Rule", "Status"} }

// TableRow implements statedb.TableWritable.
func (e *PolicyEntry) TableRow() []string { return []string{e.Key.String(), e.Rule, e.Status.String()} }

// PolicyEntryByKey is the primary index.
var PolicyEntryByKey = statedb.Index[*PolicyEntry, PolicyKey]{
	Name: "key",
	FromObject: func(e *PolicyEntry) index.KeySet {
		return index.NewKeySet(index.String(e.Key.String()))
	},
	FromKey:    func(k PolicyKey) index.Key { return index.String(k.String()) },
	FromString: index.FromString,
	Unique:     true,
}

// Endpoint policy flags, as EP_F_* in bpf/lib/policy.h.
const (
	EnforceIngress uint16 = 1 << 0
	EnforceEgress  uint16 = 1 << 1
)

// EndpointPolicy is what one local endpoint enforces: glia_ep_policy.
// Every local endpoint has one; the policy reconciler also puts the
// policy program on its interface.
type EndpointPolicy struct {
	IP         netip.Addr
	HostIfName string
	Pod        string // "namespace/name", "" for the node's health endpoint
	PolicyID   uint16
	Flags      uint16
	// Waiting says why the endpoint denies everything for now (its Pod
	// is not known yet), "" otherwise.
	Waiting string

	Status reconciler.Status
}

// Clone returns a copy.
func (e *EndpointPolicy) Clone() *EndpointPolicy { c := *e; return &c }

// Same compares two rows, status aside.
func (e *EndpointPolicy) Same(o *EndpointPolicy) bool {
	return e.IP == o.IP && e.HostIfName == o.HostIfName && e.Pod == o.Pod && e.PolicyID == o.PolicyID &&
		e.Flags == o.Flags && e.Waiting == o.Waiting
}

// GetStatus gives the reconciler the row's status.
func (e *EndpointPolicy) GetStatus() reconciler.Status { return e.Status }

// SetStatus sets the status on e (a clone) and returns it.
func (e *EndpointPolicy) SetStatus(s reconciler.Status) *EndpointPolicy { e.Status = s; return e }

// TableHeader implements statedb.TableWritable.
func (*EndpointPolicy) TableHeader() []string {
	return []string{"IP", "Pod", "Policy", "Ingress", "Egress", "Status"}
}

// TableRow implements statedb.TableWritable.
func (e *EndpointPolicy) TableRow() []string {
	onOff := func(f uint16) string {
		if e.Flags&f != 0 {
			return "enforced"
		}
		return "-"
	}
	return []string{e.IP.String(), e.Pod, strconv.Itoa(int(e.PolicyID)), onOff(EnforceIngress), onOff(EnforceEgress), e.Status.String()}
}

// EndpointPolicyByIP is the primary index.
var EndpointPolicyByIP = statedb.Index[*EndpointPolicy, netip.Addr]{
	Name:       "ip",
	FromObject: func(e *EndpointPolicy) index.KeySet { return index.NewKeySet(index.NetIPAddr(e.IP)) },
	FromKey:    index.NetIPAddr,
	FromString: index.NetIPAddrString,
	Unique:     true,
}
