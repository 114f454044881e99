// Package datapath defines the narrow interface between the agent's control
// plane and the kernel. Two implementations sit behind it: the legacy
// datapath (kernel routing + iptables, in package legacy) and the eBPF
// datapath (package bpf). The agent picks one per node at start; everything
// above this interface is the same for both and testable without root.
package datapath

import (
	"context"
	"net/netip"

	"glia.dev/glia/internal/api"
)

// LocalNode describes the node the datapath runs on.
type LocalNode struct {
	Name        string
	IP          netip.Addr   // the node's address on Device
	Device      string       // the node's uplink, e.g. eth0
	PodCIDR     netip.Prefix // this node's pod CIDR (spec.podCIDR)
	ClusterCIDR netip.Prefix // all pod CIDRs of the cluster
	ServiceCIDR netip.Prefix
}

// Options are the datapath settings resolved from the agent's config.
type Options struct {
	RoutingMode          string // "native" or "tunnel"
	AutoDirectNodeRoutes bool
	KubeProxyReplacement bool
	Masquerade           bool // masquerade traffic leaving the cluster at all
	BPFMasquerade        bool // ... by eBPF rather than iptables
	HostRoutingBPF       bool
	LBAlgorithm          string // "random" or "maglev"
	StateDir             string // per-node directory for datapath state
	BPFFSDir             string // per-node pin directory under bpffs
	MTU                  int
	// SocketLBCgroup is the cgroup v2 directory the eBPF datapath
	// attaches its socket load balancer to (connect/sendmsg/recvmsg/
	// getpeername), so that the node's own processes in it reach
	// ClusterIPs (and NodePorts on node addresses) with kube-proxy
	// replacement. Only sockets of the node's network namespace are
	// touched. "" = off.
	SocketLBCgroup string
}

// RemoteNode is another node of the cluster.
type RemoteNode struct {
	Name    string
	IP      netip.Addr
	PodCIDR netip.Prefix
}

// Backend is one endpoint of a Service port.
type Backend struct {
	Addr        netip.AddrPort
	NodeName    string
	Ready       bool
	Terminating bool
}

// Service is one (frontend address, port, protocol) to load-balance.
type Service struct {
	Namespace       string
	Name            string
	PortName        string
	Protocol        string         // "TCP" or "UDP"
	Frontend        netip.AddrPort // ClusterIP:port
	NodePort        uint16         // 0 when none
	Backends        []Backend
	SessionAffinity bool
}

// ServiceKey is the key ("namespace/name") of the Service the frontend
// belongs to, as UpdateServices takes it.
func (s Service) ServiceKey() string {
	return s.Namespace + "/" + s.Name
}

// Key names a Service frontend uniquely.
func (s Service) Key() string {
	return s.Protocol + "/" + s.Frontend.String()
}

// Datapath programs the kernel for one node. Every method is idempotent:
// calling it again with the same input changes nothing.
type Datapath interface {
	// Name is "legacy" or "bpf".
	Name() string
	// Init prepares node-wide state: sysctls, the masquerade rule or program,
	// program attachments to the node's device. It restores what a previous
	// run left (pinned maps) instead of starting from empty.
	Init(ctx context.Context) error
	// UpsertEndpoint makes a local pod reachable.
	UpsertEndpoint(ctx context.Context, ep api.Endpoint) error
	// DeleteEndpoint removes what UpsertEndpoint installed.
	DeleteEndpoint(ctx context.Context, ep api.Endpoint) error
	// SyncEndpoints is given every live local endpoint and removes state for any other.
	SyncEndpoints(ctx context.Context, eps []api.Endpoint) error
	// SyncNodes is given every other node and installs routes or tunnel entries,
	// removing those of nodes that are gone.
	SyncNodes(ctx context.Context, nodes []RemoteNode) error
	// SyncServices is given every Service frontend (only used with kube-proxy
	// replacement): the full desired state, at start and on a periodic
	// resync. It touches the kernel only where that state differs from
	// what the datapath wrote.
	SyncServices(ctx context.Context, svcs []Service) error
	// UpdateServices applies the frontends of the named Services only: for
	// each key ("namespace/name") in changed, the Service's frontends become
	// exactly changed[key]; an empty or nil slice removes them. Frontends of
	// Services not named are untouched. Cost is proportional to the change.
	UpdateServices(ctx context.Context, changed map[string][]Service) error
	// Close detaches nothing that carries traffic: a restarting agent must not
	// drop packets. It releases file descriptors only.
	Close() error
}
