// Package legacy is glia's legacy datapath: the node's kernel routing table
// carries pod traffic (a /32 route per local pod, a route per remote node's
// pod CIDR via that node's address) and an iptables MASQUERADE rule owned by
// glia SNATs traffic that leaves the cluster. Services are left to
// kube-proxy. It is built on the shared Linux layer (package linux).
package legacy

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/netip"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/state"
)

// Datapath is the legacy datapath for one node.
type Datapath struct {
	log  *slog.Logger
	node datapath.LocalNode
	opts datapath.Options
}

var _ datapath.Datapath = (*Datapath)(nil)

// New returns the legacy datapath. It touches nothing until Init.
func New(log *slog.Logger, node datapath.LocalNode, opts datapath.Options) (*Datapath, error) {
	if opts.BPFMasquerade() || opts.Modes.KubeProxyReplacement || opts.HostRoutingBPF() {
		return nil, errors.New("legacy datapath cannot do BPF masquerade, kube-proxy replacement or BPF host routing: use the bpf datapath")
	}
	if opts.Modes.RoutingMode != "native" {
		return nil, fmt.Errorf("legacy datapath supports routing-mode=native only (got %q): set routing-mode: \"native\" or use the bpf datapath for tunnel mode", opts.Modes.RoutingMode)
	}
	return &Datapath{log: log.With("subsys", "datapath-legacy"), node: node, opts: opts}, nil
}

// Name implements datapath.Datapath.
func (d *Datapath) Name() string { return config.DatapathLegacy }

// Init makes unallocated addresses of the node's pod CIDR unreachable
// (instead of routed to the default gateway) and returns the node-wide
// state: forwarding on, no reverse-path filter, and the masquerade rule
// when masquerading.
func (d *Datapath) Init(context.Context) (datapath.Host, error) {
	unreach := &netlink.Route{Dst: linux.IPNet(d.node.PodCIDR), Type: unix.RTN_UNREACHABLE}
	if err := linux.ReplaceRoute(unreach); err != nil {
		return datapath.Host{}, fmt.Errorf("unreachable route for %s: %w", d.node.PodCIDR, err)
	}
	h := datapath.Host{Sysctls: []*state.Sysctl{
		{Name: "net.ipv4.ip_forward", Value: "1"},
		{Name: "net.ipv4.conf.all.rp_filter", Value: "0"},
	}}
	if d.opts.Masquerade() {
		h.Masquerade = []*state.MasqueradeRule{{PodCIDR: d.node.PodCIDR, ClusterCIDR: d.node.ClusterCIDR}}
	}
	return h, nil
}

// Endpoints implements datapath.Datapath.
func (d *Datapath) Endpoints() reconciler.Operations[*state.Endpoint] { return endpointOps{d} }

// Nodes implements datapath.Datapath.
func (d *Datapath) Nodes() reconciler.Operations[*state.Node] { return nodeOps{d} }

// Services implements datapath.Datapath: kube-proxy's job here.
func (d *Datapath) Services() reconciler.Operations[*state.Service] { return nil }

// Programs implements datapath.Datapath: no programs here.
func (d *Datapath) Programs() reconciler.Operations[*state.Program] { return nil }

// Close releases nothing that carries traffic: routes and rules stay.
func (d *Datapath) Close() error { return nil }

// endpointOps routes each pod's address to its veth and pins its
// neighbour entry, so the node never has to ARP for it.
type endpointOps struct{ d *Datapath }

func (o endpointOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, ep *state.Endpoint) error {
	link, err := netlinksafe.LinkByName(ep.HostIfName)
	if err != nil {
		return fmt.Errorf("endpoint %s: host interface %s: %w", ep.Attachment, ep.HostIfName, err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: linux.Host32(ep.IP), Scope: netlink.SCOPE_LINK}
	changed, err := linux.EnsureRoute(r)
	if err != nil {
		return fmt.Errorf("endpoint %s: %w", ep.Attachment, err)
	}
	if changed && datapath.Refreshing(ep.Status) {
		o.d.opts.Drifted(datapath.ReconcilerEndpoints, ep.Key(), "route to "+ep.IP.String()+" was missing or wrong")
	}
	if len(ep.PodMAC) > 0 {
		changed, err := linux.SetPermanentNeighbour(link.Attrs().Index, ep.IP, ep.PodMAC)
		if err != nil {
			return fmt.Errorf("endpoint %s: %w on %s", ep.Attachment, err, ep.HostIfName)
		}
		if changed && datapath.Refreshing(ep.Status) {
			o.d.opts.Drifted(datapath.ReconcilerEndpoints, ep.Key(), "neighbour entry of "+ep.IP.String()+" was missing")
		}
	}
	return nil
}

// Delete removes the pod's route; the veth itself is the CNI plugin's.
func (o endpointOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, ep *state.Endpoint) error {
	return linux.DeleteRouteTo(netip.PrefixFrom(ep.IP, 32))
}

// Prune removes /32 routes of glia's whose pod is gone.
func (o endpointOps) Prune(_ context.Context, _ statedb.ReadTxn, eps iter.Seq2[*state.Endpoint, statedb.Revision]) error {
	live := map[netip.Prefix]bool{}
	for ep := range eps {
		live[netip.PrefixFrom(ep.IP, 32)] = true
	}
	_, err := linux.PruneRoutes(func(r netlink.Route) bool {
		p, ok := linux.PrefixOf(r.Dst)
		return ok && p.Bits() == 32 && r.Gw == nil && !live[p]
	})
	return err
}

// nodeOps installs "podCIDR via nodeIP" for every other node
// (auto-direct-node-routes).
type nodeOps struct{ d *Datapath }

// route is the route a node wants, if any.
func (o nodeOps) route(n *state.Node) (*netlink.Route, error) {
	if n.Local || !o.d.opts.Modes.AutoDirectNodeRoutes || !n.PodCIDR.IsValid() || !n.IP.IsValid() {
		return nil, nil
	}
	dev, err := netlinksafe.LinkByName(o.d.node.Device)
	if err != nil {
		return nil, fmt.Errorf("node device %s: %w", o.d.node.Device, err)
	}
	return &netlink.Route{Dst: linux.IPNet(n.PodCIDR.Masked()), Gw: n.IP.AsSlice(), LinkIndex: dev.Attrs().Index}, nil
}

func (o nodeOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, n *state.Node) error {
	r, err := o.route(n)
	if err != nil || r == nil {
		return err
	}
	changed, err := linux.EnsureRoute(r)
	if err != nil {
		return fmt.Errorf("node %s: route %s via %s: %w", n.Name, n.PodCIDR, n.IP, err)
	}
	if changed && datapath.Refreshing(n.Status) {
		o.d.opts.Drifted(datapath.ReconcilerNodes, n.Name, "route to "+n.PodCIDR.String()+" was missing or wrong")
	}
	return nil
}

func (o nodeOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, n *state.Node) error {
	if n.Local || !n.PodCIDR.IsValid() {
		return nil
	}
	return linux.DeleteRouteTo(n.PodCIDR.Masked())
}

// Prune removes glia's routes via a gateway to pod CIDRs no node wants.
func (o nodeOps) Prune(_ context.Context, _ statedb.ReadTxn, nodes iter.Seq2[*state.Node, statedb.Revision]) error {
	want := map[netip.Prefix]bool{}
	for n := range nodes {
		if r, _ := o.route(n); r != nil {
			want[n.PodCIDR.Masked()] = true
		}
	}
	_, err := linux.PruneRoutes(func(r netlink.Route) bool {
		p, ok := linux.PrefixOf(r.Dst)
		return ok && r.Gw != nil && !want[p]
	})
	return err
}
