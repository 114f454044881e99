package linux

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// EnsureRoute writes a route only when the kernel's differs from the one
// wanted, and says so: a route written once is not "changed" again (which
// the reconcilers would count as drift), whatever the kernel filled in.
func TestPrivilegedEnsureRoute(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); testutils.UnmountNS(n) })
	err = n.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth1"}); err != nil {
			return err
		}
		eth0, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		peer, _ := netlinksafe.LinkByName("eth1")
		for _, l := range []netlink.Link{eth0, peer} {
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		a, _ := netlink.ParseAddr("198.18.0.11/24")
		if err := netlink.AddrAdd(eth0, a); err != nil {
			return err
		}
		routes := map[string]func() *netlink.Route{
			// via a gateway, the device left to the kernel
			"node route": func() *netlink.Route {
				return &netlink.Route{Dst: IPNet(netip.MustParsePrefix("198.19.2.0/24")), Gw: net.ParseIP("198.18.0.12")}
			},
			// a /32 on a device
			"endpoint route": func() *netlink.Route {
				return &netlink.Route{Dst: Host32(netip.MustParseAddr("198.19.1.5")), LinkIndex: eth0.Attrs().Index, Scope: netlink.SCOPE_LINK}
			},
		}
		for name, want := range routes {
			if changed, err := EnsureRoute(want()); err != nil || !changed {
				t.Errorf("%s, first time: changed %t, %v; want written", name, changed, err)
			}
			if changed, err := EnsureRoute(want()); err != nil || changed {
				t.Errorf("%s, again: changed %t, %v; want left alone", name, changed, err)
			}
			// Deleted behind glia's back: written again, and said so.
			dst, _ := PrefixOf(want().Dst)
			if err := DeleteRouteTo(dst); err != nil {
				t.Fatal(err)
			}
			if changed, err := EnsureRoute(want()); err != nil || !changed {
				t.Errorf("%s, after a delete: changed %t, %v; want written", name, changed, err)
			}
		}
		// Another gateway is a change.
		if changed, err := EnsureRoute(&netlink.Route{Dst: IPNet(netip.MustParsePrefix("198.19.2.0/24")), Gw: net.ParseIP("198.18.0.22")}); err != nil || !changed {
			t.Errorf("node route via another gateway: changed %t, %v; want rewritten", changed, err)
		}
		rs, err := Routes()
		if err != nil {
			return err
		}
		if len(rs) != 2 {
			t.Errorf("glia's routes: %v, want the two", rs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
