package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/netnsfile"
)

const netnsRunDir = netnsfile.Dir

// createNamedNetns creates /var/run/netns/<name> (as `ip netns add` does).
func createNamedNetns(name string) error {
	if err := netnsfile.Create(filepath.Join(netnsRunDir, name)); err != nil {
		return fmt.Errorf("create network namespace %s: %w", name, err)
	}
	return nil
}

// deleteNamedNetns unmounts and removes /var/run/netns/<name>; a missing one is fine.
func deleteNamedNetns(name string) error {
	return netnsfile.Remove(filepath.Join(netnsRunDir, name))
}

// listNamedNetns returns the named namespaces whose name starts with prefix.
func listNamedNetns(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsRunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// inNetns runs f with the calling goroutine's thread in the named namespace.
func inNetns(name string, f func() error) error {
	n, err := ns.GetNS(filepath.Join(netnsRunDir, name))
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Do(func(ns.NetNS) error { return f() })
}

// handleFor returns a netlink handle bound to a named namespace.
func handleFor(name string) (*netlink.Handle, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer h.Close()
	return netlink.NewHandleAt(h)
}

func writeSysctl(key, val string) error {
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addrOf(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}}
}

// blackholes are the root-namespace routes that keep lab traffic in the lab:
// one route for everything the lab owns. The bridge's connected route for
// the underlay (a /24 inside it) is more specific, so the control plane
// still reaches the nodes.
var blackholes = []netip.Prefix{LabCIDR}

// setupRootNetwork adds the lab's bridge, its address and the blackhole
// routes: the only things the lab changes in the root namespace.
func setupRootNetwork() error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName, MTU: 1500}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s: %w", BridgeName, err)
	}
	// Keep the bridge quiet and unrouted before it comes up.
	if err := writeSysctl("net.ipv6.conf."+BridgeName+".disable_ipv6", "1"); err != nil {
		return err
	}
	if err := writeSysctl("net.ipv4.conf."+BridgeName+".forwarding", "0"); err != nil {
		return err
	}
	if err := netlink.AddrAdd(br, addrOf(BridgeAddr, UnderlayCIDR.Bits())); err != nil {
		return fmt.Errorf("address %s on %s: %w", BridgeAddr, BridgeName, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return err
	}
	for _, p := range blackholes {
		r := &netlink.Route{Dst: prefixToIPNet(p), Type: unix.RTN_BLACKHOLE}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("blackhole %s: %w", p, err)
		}
	}
	return nil
}

// teardownRootNetwork removes what setupRootNetwork added and every link of
// the lab still in the root namespace. Missing pieces are not errors.
func teardownRootNetwork() error {
	var errs []error
	// A dump the kernel interrupted (links of other namespaces come and
	// go) is retried; if listing still fails, the blackhole goes anyway.
	links, err := netlinksafe.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		if name == BridgeName || strings.HasPrefix(name, "glab-") {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
			}
		}
	}
	for _, p := range blackholes {
		r := &netlink.Route{Dst: prefixToIPNet(p), Type: unix.RTN_BLACKHOLE}
		if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete blackhole %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// attachNamespace creates netns name with a veth whose root side (rootName)
// is a port of the bridge and whose inside end is eth0 with addr/24.
func attachNamespace(name, rootName string, addr netip.Addr) error {
	if err := createNamedNetns(name); err != nil {
		return err
	}
	nsh, err := netns.GetFromName(name)
	if err != nil {
		return err
	}
	defer nsh.Close()
	br, err := netlink.LinkByName(BridgeName)
	if err != nil {
		return err
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: rootName, MasterIndex: br.Attrs().Index, MTU: 1500},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(nsh)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s for %s: %w", rootName, name, err)
	}
	if err := writeSysctl("net.ipv6.conf."+rootName+".disable_ipv6", "1"); err != nil {
		return err
	}
	root, err := netlink.LinkByName(rootName)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(root); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, ifname := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("%s in %s: %w", ifname, name, err)
		}
		if ifname == "eth0" {
			if err := h.AddrAdd(l, addrOf(addr, UnderlayCIDR.Bits())); err != nil {
				return fmt.Errorf("address %s in %s: %w", addr, name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	return inNetns(name, func() error {
		return writeSysctl("net.ipv6.conf.all.disable_ipv6", "1")
	})
}

// setupOutside creates the outside namespace: the nodes' default gateway on
// the bridge and the "internet" (the outside server's 198.18.64.10 on its
// loopback). It has no route to pod addresses, so only masqueraded traffic
// gets an answer.
func setupOutside() error {
	if err := attachNamespace(OutsideNetns, outsideVeth, GatewayAddr); err != nil {
		return err
	}
	h, err := handleFor(OutsideNetns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.AddrAdd(lo, addrOf(OutsideAddr, 32)); err != nil {
		return fmt.Errorf("address %s in the outside namespace: %w", OutsideAddr, err)
	}
	return nil
}

// setupNode creates node i's namespace, its eth0 on the bridge and its
// default route through the outside namespace.
func setupNode(i int) error {
	name := NodeNetns(NodeName(i))
	if err := attachNamespace(name, hostVeth(i), NodeIP(i)); err != nil {
		return err
	}
	h, err := handleFor(name)
	if err != nil {
		return err
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	def := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: GatewayAddr.AsSlice()}
	if err := h.RouteAdd(def); err != nil {
		return fmt.Errorf("default route of %s: %w", name, err)
	}
	return inNetns(name, func() error {
		for k, v := range map[string]string{
			"net.ipv4.ip_forward":          "1",
			"net.ipv4.conf.all.rp_filter":  "0",
			"net.ipv4.conf.eth0.rp_filter": "0",
			"net.ipv4.ping_group_range":    "0 2147483647",
		} {
			if err := writeSysctl(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}
