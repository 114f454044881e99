package bpf

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/netip"

	"github.com/cilium/statedb"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

// nodeOps reconciles node routing: every node's address in glia_node_ips
// (this node's flagged local); for every other node, in tunnel mode its
// pod CIDR in glia_tunnel and a route to it through the tunnel device (the
// stack's traffic to remote pods, and all pod traffic with legacy host
// routing; to_netdev gives it its tunnel key), in native mode with
// auto-direct-node-routes a route to it via the node's address.
type nodeOps struct{ d *Datapath }

// remote says whether the datapath routes to n's pod CIDR.
func (d *Datapath) remote(n *state.Node) bool {
	return !n.Local && n.PodCIDR.IsValid() && n.PodCIDR.Addr().Is4() && n.IP.Is4() && n.PodCIDR.Masked() != d.node.PodCIDR.Masked()
}

// nodeRoute is the kernel route to n's pod CIDR, if it wants one.
func (d *Datapath) nodeRoute(n *state.Node) (*netlink.Route, error) {
	if !d.remote(n) {
		return nil, nil
	}
	r := &netlink.Route{Dst: linux.IPNet(n.PodCIDR.Masked())}
	switch {
	case d.opts.Tunnel():
		vx, err := netlinksafe.LinkByName(VXLANDevice)
		if err != nil {
			return nil, fmt.Errorf("tunnel device: %w", err)
		}
		r.LinkIndex, r.Scope, r.Src = vx.Attrs().Index, netlink.SCOPE_LINK, d.node.IP.AsSlice()
	case d.opts.Modes.AutoDirectNodeRoutes:
		r.Gw = n.IP.AsSlice()
	default:
		return nil, nil // routes to other nodes are someone else's
	}
	return r, nil
}

func nodeValue(n *state.Node) maps.NodeValue {
	if n.Local {
		return maps.NodeValue{Flags: maps.NodeFlagLocal}
	}
	return maps.NodeValue{}
}

func (o nodeOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, n *state.Node) error {
	d := o.d
	return d.locked(func() error {
		drift := func(what string) {
			if datapath.Refreshing(n.Status) {
				d.opts.Drifted(datapath.ReconcilerNodes, n.Name, what)
			}
		}
		if n.IP.Is4() {
			v, found, err := d.nodeIPs.Lookup(n.IP)
			if err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			if want := nodeValue(n); !found || v != want {
				if err := d.nodeIPs.Update(n.IP, want); err != nil {
					return fmt.Errorf("node %s: address %s: %w", n.Name, n.IP, err)
				}
				drift(maps.NameNodeIPs + " entry of " + n.IP.String() + " was missing or wrong")
			}
		}
		if !d.remote(n) {
			return nil
		}
		if d.opts.Tunnel() {
			ip, found, err := d.tunnel.Lookup(n.PodCIDR.Masked())
			if err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			if !found || ip != n.IP {
				if err := d.tunnel.Update(n.PodCIDR.Masked(), n.IP); err != nil {
					return fmt.Errorf("node %s: %w", n.Name, err)
				}
				drift(maps.NameTunnel + " entry of " + n.PodCIDR.String() + " was missing or wrong")
			}
		}
		r, err := d.nodeRoute(n)
		if err != nil || r == nil {
			return err
		}
		changed, err := linux.EnsureRoute(r)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if changed {
			drift("route to " + n.PodCIDR.String() + " was missing or wrong")
		}
		return nil
	})
}

func (o nodeOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, n *state.Node) error {
	d := o.d
	return d.locked(func() error {
		var errs []error
		if n.IP.Is4() && n.IP != d.node.IP {
			errs = append(errs, d.nodeIPs.Delete(n.IP))
		}
		if d.remote(n) {
			errs = append(errs, d.tunnel.Delete(n.PodCIDR.Masked()), linux.DeleteRouteTo(n.PodCIDR.Masked()))
		}
		return errors.Join(errs...)
	})
}

// Prune removes node addresses, tunnel entries and routes to pod CIDRs of
// nodes the table no longer holds, and those of the other routing mode.
func (o nodeOps) Prune(_ context.Context, _ statedb.ReadTxn, nodes iter.Seq2[*state.Node, statedb.Revision]) error {
	d := o.d
	return d.locked(func() error {
		ips := map[netip.Addr]bool{d.node.IP: true}
		cidrs := map[netip.Prefix]bool{}
		for n := range nodes {
			ips[n.IP] = true
			if d.remote(n) {
				cidrs[n.PodCIDR.Masked()] = true
			}
		}
		var errs []error
		cur, err := d.nodeIPs.List()
		if err != nil {
			return err
		}
		for _, e := range cur {
			if !ips[e.Addr] {
				errs = append(errs, d.nodeIPs.Delete(e.Addr))
			}
		}
		tun, err := d.tunnel.List()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, e := range tun {
			if !d.opts.Tunnel() || !cidrs[e.Prefix] {
				errs = append(errs, d.tunnel.Delete(e.Prefix))
			}
		}
		vxIndex := 0
		if vx, err := netlinksafe.LinkByName(VXLANDevice); err == nil {
			vxIndex = vx.Attrs().Index
		}
		native := !d.opts.Tunnel() && d.opts.Modes.AutoDirectNodeRoutes
		_, err = linux.PruneRoutes(func(r netlink.Route) bool {
			p, ok := linux.PrefixOf(r.Dst)
			viaTunnel := vxIndex != 0 && r.LinkIndex == vxIndex
			if !ok || (r.Gw == nil && !viaTunnel) {
				return false // not a node route (an endpoint's)
			}
			// a route of the other routing mode is stale too
			viaGateway := r.Gw != nil
			return !cidrs[p] || viaGateway != native
		})
		return errors.Join(append(errs, err)...)
	})
}
