package linux

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// PodGateway is the link-local next hop every pod (and the health
// endpoint) routes through: the host side of its veth answers for it.
var PodGateway = netip.MustParseAddr("169.254.1.1")

// ConfigurePodInterface drives a pod's interface, from inside the pod's
// network namespace, to the state glia gives every pod: lo up; ifName up
// with mtu (0: leave it) and addr/32 as its only IPv4 address; a scope-link
// route to the gateway, a default route through it, and a permanent
// neighbour entry gateway → hostMAC (the host side of the veth). What is
// already right is left alone, so it serves a fresh interface (the CNI
// plugin's ADD) and one that may have drifted (the health endpoint the
// agent adopts after a restart) alike. It returns the interface's MAC.
func ConfigurePodInterface(ifName string, addr, gw netip.Addr, mtu int, hostMAC net.HardwareAddr) (net.HardwareAddr, error) {
	if lo, err := netlinksafe.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("set lo up: %w", err)
		}
	}
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", ifName, err)
	}
	if mtu != 0 && link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return nil, fmt.Errorf("set mtu of %s: %w", ifName, err)
		}
	}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", ifName, err)
	}
	have := false
	for _, a := range addrs {
		got, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if got.Unmap() == addr && ones == 32 {
			have = true
			continue
		}
		// An address of an earlier pod CIDR.
		if err := netlink.AddrDel(link, &a); err != nil {
			return nil, fmt.Errorf("delete stale address %s: %w", a.IPNet, err)
		}
	}
	if !have {
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: Host32(addr)}); err != nil {
			return nil, fmt.Errorf("add address %s/32: %w", addr, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set %s up: %w", ifName, err)
		}
	}
	idx := link.Attrs().Index
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: Host32(gw), Scope: netlink.SCOPE_LINK}); err != nil {
		return nil, fmt.Errorf("route to gateway %s: %w", gw, err)
	}
	if err := netlink.RouteReplace(&netlink.Route{
		LinkIndex: idx, Dst: IPNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: gw.AsSlice(), Scope: netlink.SCOPE_UNIVERSE,
	}); err != nil {
		return nil, fmt.Errorf("default route via %s: %w", gw, err)
	}
	if _, err := SetPermanentNeighbour(idx, gw, hostMAC); err != nil {
		return nil, fmt.Errorf("neighbour %s -> %s: %w", gw, hostMAC, err)
	}
	return link.Attrs().HardwareAddr, nil
}
