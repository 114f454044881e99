// Package linux is the Linux layer both datapaths share: glia's routes
// (one marker), permanent neighbour entries, the iptables masquerade rule,
// sysctls, the pod interface setup used by the CNI plugin and the health
// endpoint alike, link helpers, and the one probe of the kernel's
// features. Everything here acts in the network namespace of the calling
// thread.
package linux

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks every route glia installs (the rtm_protocol of its
// routes: 'g'), so that it finds and removes its own and nothing else.
const RouteProtocol netlink.RouteProtocol = 0x67

// RetiredRouteProtocol is the marker the eBPF datapath used before both
// datapaths shared RouteProtocol. Routes carrying it are glia's too: the
// reconcilers replace them (a replace keeps the route in place) and prune
// the rest.
const RetiredRouteProtocol netlink.RouteProtocol = 0xc7

// IsGlia says whether a route is one of glia's.
func IsGlia(r netlink.Route) bool {
	return r.Protocol == RouteProtocol || r.Protocol == RetiredRouteProtocol
}

// IPNet converts a prefix.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Host32 is the /32 of an IPv4 address.
func Host32(a netip.Addr) *net.IPNet { return IPNet(netip.PrefixFrom(a, 32)) }

// PrefixOf converts a route destination back; ok is false for a default
// route (nil destination) or a non-IPv4 one.
func PrefixOf(dst *net.IPNet) (netip.Prefix, bool) {
	if dst == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(dst.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := dst.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

// ReplaceRoute installs r (in the main table) marked as glia's.
func ReplaceRoute(r *netlink.Route) error {
	r.Protocol = RouteProtocol
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s: %w", r.Dst, err)
	}
	return nil
}

// Routes lists glia's IPv4 routes in the main table.
func Routes() ([]netlink.Route, error) {
	all, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []netlink.Route
	for _, r := range all {
		if IsGlia(r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// RouteTo returns glia's route to dst in the main table, if there is one.
func RouteTo(dst netip.Prefix) (netlink.Route, bool, error) {
	rs, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Dst: IPNet(dst)},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
	if err != nil {
		return netlink.Route{}, false, fmt.Errorf("list routes to %s: %w", dst, err)
	}
	for _, r := range rs {
		if IsGlia(r) {
			return r, true, nil
		}
	}
	return netlink.Route{}, false, nil
}

// DeleteRoute deletes a route; one that is already gone is fine.
func DeleteRoute(r *netlink.Route) error {
	if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete route %s: %w", r.Dst, err)
	}
	return nil
}

// DeleteRouteTo deletes glia's route to dst, if any.
func DeleteRouteTo(dst netip.Prefix) error {
	r, ok, err := RouteTo(dst)
	if err != nil || !ok {
		return err
	}
	return DeleteRoute(&r)
}

// PruneRoutes deletes every unicast route of glia's for which stale says
// so, and returns how many it deleted.
func PruneRoutes(stale func(netlink.Route) bool) (int, error) {
	routes, err := Routes()
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || !stale(r) {
			continue
		}
		if err := DeleteRoute(&r); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// SameRoute says whether the route in the kernel is the one wanted: same
// destination, gateway, scope and marker, and the device and source when
// want names them (the kernel fills in the device of a route via a
// gateway).
func SameRoute(have netlink.Route, want *netlink.Route) bool {
	return have.Protocol == RouteProtocol && (want.LinkIndex == 0 || have.LinkIndex == want.LinkIndex) && have.Scope == want.Scope &&
		have.Gw.Equal(want.Gw) && (want.Src == nil || have.Src.Equal(want.Src)) && have.Dst.String() == want.Dst.String()
}

// EnsureRoute installs want unless the kernel already has it, and says
// whether it had to (the route was missing or differed).
func EnsureRoute(want *netlink.Route) (changed bool, err error) {
	want.Protocol = RouteProtocol
	dst, ok := PrefixOf(want.Dst)
	if ok {
		have, found, err := RouteTo(dst)
		if err != nil {
			return false, err
		}
		if found && SameRoute(have, want) {
			return false, nil
		}
	}
	return true, ReplaceRoute(want)
}

// SetPermanentNeighbour pins ip → mac on the link, so the node never has
// to ARP for it. It says whether the entry was missing or differed.
func SetPermanentNeighbour(linkIndex int, ip netip.Addr, mac net.HardwareAddr) (bool, error) {
	have, err := NeighList(linkIndex)
	if err != nil {
		return false, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range have {
		if n.IP.Equal(ip.AsSlice()) && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == mac.String() {
			return false, nil
		}
	}
	n := &netlink.Neigh{LinkIndex: linkIndex, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: mac}
	if err := netlink.NeighSet(n); err != nil {
		return true, fmt.Errorf("neighbour %s: %w", ip, err)
	}
	return true, nil
}

// NeighList lists the IPv4 neighbours of a link, retrying a dump the
// kernel interrupted (as netlinksafe does for the other dumps).
func NeighList(linkIndex int) ([]netlink.Neigh, error) {
	var err error
	for range 5 {
		var ns []netlink.Neigh
		ns, err = netlink.NeighList(linkIndex, netlink.FAMILY_V4)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return ns, err
		}
	}
	return nil, err
}
