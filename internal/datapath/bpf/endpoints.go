package bpf

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/netip"
	"strings"

	"github.com/cilium/statedb"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

// endpointOps reconciles local endpoints: for each, a /32 route to its
// veth (the stack reaches the pod — host traffic, legacy host routing —
// the same way the programs do), its glia_endpoints entry, and
// from_container on its veth.
type endpointOps struct{ d *Datapath }

func (o endpointOps) Update(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, ep *state.Endpoint) error {
	d := o.d
	return d.locked(func() error {
		if !ep.IP.Is4() {
			return fmt.Errorf("endpoint %s: address %s: IPv4 required", ep.Attachment, ep.IP)
		}
		host, err := netlinksafe.LinkByName(ep.HostIfName)
		if err != nil {
			return fmt.Errorf("endpoint %s: host interface %s: %w", ep.IP, ep.HostIfName, err)
		}
		info := maps.EndpointInfo{IfIndex: uint32(host.Attrs().Index)}
		copy(info.HostMAC[:], host.Attrs().HardwareAddr)
		podMAC, err := podMAC(ep)
		if err != nil {
			return fmt.Errorf("endpoint %s: %w", ep.IP, err)
		}
		copy(info.PodMAC[:], podMAC)
		refresh := datapath.Refreshing(ep.Status)
		drift := func(what string) {
			if refresh {
				d.opts.Drifted(datapath.ReconcilerEndpoints, ep.Key(), what)
			}
		}

		changed, err := linux.EnsureRoute(&netlink.Route{LinkIndex: host.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: linux.Host32(ep.IP)})
		if err != nil {
			return fmt.Errorf("endpoint %s: %w", ep.IP, err)
		}
		if changed {
			drift("route to " + ep.IP.String() + " was missing or wrong")
		}
		have, found, err := d.eps.Lookup(ep.IP)
		if err != nil {
			return fmt.Errorf("endpoint %s: %w", ep.IP, err)
		}
		if !found || have != info {
			if err := d.eps.Update(ep.IP, info); err != nil {
				return fmt.Errorf("endpoint %s: %w", ep.IP, err)
			}
			drift(maps.NameEndpoints + " entry of " + ep.IP.String() + " was missing or wrong")
		}
		a := attachment{prog: "from_container", ifname: ep.HostIfName, ifindex: host.Attrs().Index}
		if refresh {
			attached, err := d.attached(a)
			if err != nil {
				return fmt.Errorf("endpoint %s: %w", ep.IP, err)
			}
			if !attached {
				drift("from_container was not attached to " + ep.HostIfName)
			}
		}
		// Always: a new agent version replaces the program in place.
		if err := d.attach(a, d.objs.FromContainer); err != nil {
			return fmt.Errorf("endpoint %s: %w", ep.IP, err)
		}
		return nil
	})
}

// reattachEndpoints puts the loaded from_container on every pod interface
// that has a pinned one (replaced in place), at Init.
func (d *Datapath) reattachEndpoints() error {
	pins, err := d.pinnedLinks("from_container")
	if err != nil {
		return err
	}
	var errs []error
	for _, pin := range pins {
		a, ok := parsePinName(pin)
		if !ok || a.egress {
			continue
		}
		l, err := netlinksafe.LinkByName(a.ifname)
		if err != nil {
			continue // the pod is gone: the endpoint reconciler prunes its pin
		}
		a.ifindex = l.Attrs().Index
		if err := d.attach(a, d.objs.FromContainer); err != nil {
			errs = append(errs, fmt.Errorf("replace the program of %s: %w", a.ifname, err))
		}
	}
	return errors.Join(errs...)
}

func podMAC(ep *state.Endpoint) (net.HardwareAddr, error) {
	if len(ep.PodMAC) > 0 {
		return ep.PodMAC, nil
	}
	if ep.Netns == "" || ep.IfName == "" {
		return nil, errors.New("no pod MAC and no netns to read it from")
	}
	var mac net.HardwareAddr
	err := ns.WithNetNSPath(ep.Netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ep.IfName)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read pod MAC in %s: %w", ep.Netns, err)
	}
	return mac, nil
}

func (o endpointOps) Delete(_ context.Context, _ statedb.ReadTxn, _ statedb.Revision, ep *state.Endpoint) error {
	d := o.d
	return d.locked(func() error {
		return d.deleteEndpoint(ep.IP, ep.HostIfName)
	})
}

// deleteEndpoint removes an endpoint's program (hostIf "" keeps it), its
// map entry and its route (ip invalid keeps them).
func (d *Datapath) deleteEndpoint(ip netip.Addr, hostIf string) error {
	var errs []error
	if hostIf != "" {
		a := attachment{prog: "from_container", ifname: hostIf}
		if l, err := netlinksafe.LinkByName(hostIf); err == nil {
			a.ifindex = l.Attrs().Index
		}
		errs = append(errs, d.detach(a))
	}
	if ip.IsValid() {
		errs = append(errs, d.eps.Delete(ip), linux.DeleteRouteTo(netip.PrefixFrom(ip, 32)))
	}
	return errors.Join(errs...)
}

// Prune removes the map entries, programs and /32 routes of endpoints the
// table no longer holds.
func (o endpointOps) Prune(_ context.Context, _ statedb.ReadTxn, eps iter.Seq2[*state.Endpoint, statedb.Revision]) error {
	d := o.d
	return d.locked(func() error {
		wantIP := map[netip.Addr]bool{}
		wantIf := map[string]bool{}
		for ep := range eps {
			wantIP[ep.IP] = true
			wantIf[ep.HostIfName] = true
		}
		var errs []error
		cur, err := d.eps.List()
		if err != nil {
			return err
		}
		for _, e := range cur {
			if !wantIP[e.Addr] {
				d.log.Info("removing stale endpoint", "ip", e.Addr)
				errs = append(errs, d.deleteEndpoint(e.Addr, ""))
			}
		}
		pins, err := d.pinnedLinks("from_container")
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, p := range pins {
			ifname := strings.TrimSuffix(strings.TrimPrefix(p, "from_container-"), "-ingress")
			if !wantIf[ifname] {
				d.log.Info("removing stale endpoint program", "interface", ifname)
				errs = append(errs, d.deleteEndpoint(netip.Addr{}, ifname))
			}
		}
		_, err = linux.PruneRoutes(func(r netlink.Route) bool {
			p, ok := linux.PrefixOf(r.Dst)
			return ok && p.Bits() == 32 && r.Gw == nil && !wantIP[p.Addr()]
		})
		return errors.Join(append(errs, err)...)
	})
}
