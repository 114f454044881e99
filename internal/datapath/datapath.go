// Package datapath defines the narrow interface between the agent's
// desired state and the kernel. Two implementations sit behind it: the
// legacy datapath (kernel routing + iptables, package legacy) and the
// eBPF datapath (package bpf), both built on the shared Linux layer
// (package linux) and never on each other. config.Decide picks which one
// a node runs, together with every other datapath mode; the agent builds
// the one it names.
//
// A datapath is programmed through reconciler operations
// (github.com/cilium/statedb/reconciler): for each desired-state table
// (package state) it reconciles, it gives the Update, Delete and Prune of
// that kind of kernel object. Update is idempotent; when the object is
// being refreshed (its status is Refreshing) it first compares the kernel
// with what it wants and reports what drifted to Options.Drift before
// repairing it. Prune removes what glia owns and the table no longer
// holds, and nothing else.
package datapath

import (
	"context"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/statedb/reconciler"

	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/state"
)

// LocalNode describes the node the datapath runs on.
type LocalNode struct {
	Name        string
	IP          netip.Addr   // the node's address on Device
	Device      string       // the node's uplink, e.g. eth0
	PodCIDR     netip.Prefix // this node's pod CIDR (spec.podCIDR)
	ClusterCIDR netip.Prefix // all pod CIDRs of the cluster
}

// MapSizes are the entries of the eBPF datapath's sized maps, from the
// config keys bpf-lb-map-max, bpf-ct-map-max and bpf-nat-map-max.
type MapSizes struct {
	LB  int // services, backends, service slots, affinity
	CT  int
	NAT int
}

// Options are the datapath settings resolved from the agent's config and
// the decision config.Decide made.
type Options struct {
	Modes       config.Modes
	LBAlgorithm string // "random" or "maglev"
	MapSizes    MapSizes
	Kernel      config.KernelProbe // the one probe of the kernel, at start
	StateDir    string             // per-node directory for datapath state
	BPFFSDir    string             // per-node pin directory under bpffs
	MTU         int
	// SocketLBCgroup is the cgroup v2 directory the eBPF datapath
	// attaches its socket load balancer to (connect/sendmsg/recvmsg/
	// getpeername), so that the node's own processes in it reach
	// ClusterIPs (and NodePorts on node addresses) with kube-proxy
	// replacement. Only sockets of the node's network namespace are
	// touched. "" = off.
	SocketLBCgroup string
	// PolicyMaps are network policy's maps (package policydp), which the
	// eBPF datapath's programs share; nil: none (tests).
	PolicyMaps map[string]*ebpf.Map
	// Drift is told of every kernel object a refresh or a prune found
	// different from the desired state (and repaired): the reconciler's
	// name, the object, and what was wrong. nil: not recorded.
	Drift func(reconciler, object, what string)
}

// Masquerade says whether traffic leaving the cluster is masqueraded at all.
func (o Options) Masquerade() bool { return o.Modes.Masquerading != config.MasqDisabled }

// BPFMasquerade says whether eBPF masquerades (not iptables).
func (o Options) BPFMasquerade() bool { return o.Modes.Masquerading == config.MasqBPF }

// HostRoutingBPF says whether BPF host routing runs.
func (o Options) HostRoutingBPF() bool {
	return o.Modes.HostRouting.Mode == config.HostRoutingBPF
}

// Tunnel says whether pod traffic between nodes is encapsulated.
func (o Options) Tunnel() bool { return o.Modes.RoutingMode == "tunnel" }

// Drifted reports a repaired difference, if anyone listens.
func (o Options) Drifted(reconciler, object, what string) {
	if o.Drift != nil {
		o.Drift(reconciler, object, what)
	}
}

// Reconciler names, as the agent registers them and metrics label them.
const (
	ReconcilerEndpoints  = "endpoints"
	ReconcilerNodes      = "nodes"
	ReconcilerServices   = "services"
	ReconcilerSysctls    = "sysctls"
	ReconcilerMasquerade = "masquerade"
	ReconcilerPrograms   = "programs"
)

// Host is the node-wide kernel state a datapath wants: the sysctls, the
// iptables masquerade rule (none with BPF masquerade or masquerading off)
// and the programs on node devices.
type Host struct {
	Sysctls    []*state.Sysctl
	Masquerade []*state.MasqueradeRule
	Programs   []*state.Program
}

// Datapath programs the kernel of one node.
type Datapath interface {
	// Name is "legacy" or "bpf".
	Name() string
	// Init makes the node ready for the reconcilers, in an order that
	// never drops traffic: it loads and attaches what must be in place
	// before anything else (restoring what a previous run pinned), and
	// returns the node-wide state the reconcilers then keep true.
	Init(ctx context.Context) (Host, error)
	// Endpoints reconciles local pods (and the health endpoint): routes,
	// neighbour entries, endpoint map entries and programs.
	Endpoints() reconciler.Operations[*state.Endpoint]
	// Nodes reconciles the routes (or tunnel entries) to other nodes.
	Nodes() reconciler.Operations[*state.Node]
	// Services reconciles the load balancer; nil when kube-proxy does it.
	Services() reconciler.Operations[*state.Service]
	// Programs reconciles programs on node devices; nil for the legacy
	// datapath.
	Programs() reconciler.Operations[*state.Program]
	// Close detaches nothing that carries traffic: a restarting agent must
	// not drop packets. It releases file descriptors only.
	Close() error
}
