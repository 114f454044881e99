package legacy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/coreos/go-iptables/iptables"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/state"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, routes and iptables rules inside them")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("the iptables command is not installed")
	}
}

// newNS makes a network namespace that is removed when the test ends.
func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		testutils.UnmountNS(n)
	})
	return n
}

// in runs f inside n (on a locked thread of its own), failing the test on
// error. f may call t.Fatal: that ends f's goroutine, and in then ends the
// test from the test's goroutine.
func in(t *testing.T, n ns.NetNS, f func() error) {
	t.Helper()
	completed := false
	err := n.Do(func(ns.NetNS) error {
		err := f()
		completed = true
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !completed {
		t.FailNow()
	}
}

var (
	nodeIP      = netip.MustParseAddr("198.18.0.11")
	gatewayIP   = netip.MustParseAddr("198.18.0.254")
	outsideIP   = netip.MustParseAddr("198.18.64.10")
	podCIDR     = netip.MustParsePrefix("198.19.1.0/24")
	clusterCIDR = netip.MustParsePrefix("198.19.0.0/16")
	testNode    = datapath.LocalNode{Name: "lab-node-1", IP: nodeIP, Device: "eth0", PodCIDR: podCIDR, ClusterCIDR: clusterCIDR}
)

const masqChain = "GLIA-POSTROUTING"

// topology is a node namespace whose eth0 is a veth to an "outside"
// namespace (its default gateway, holding 198.18.64.10 as well).
type topology struct {
	node, outside ns.NetNS
}

func newTopology(t *testing.T) topology {
	t.Helper()
	top := topology{node: newNS(t), outside: newNS(t)}
	in(t, top.node, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "out0", PeerNamespace: netlink.NsFd(int(top.outside.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth eth0/out0: %w", err)
		}
		eth0, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		for _, name := range []string{"lo", "eth0"} {
			l, err := netlinksafe.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gatewayIP.AsSlice()})
	})
	in(t, top.outside, func() error {
		out0, err := netlinksafe.LinkByName("out0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(out0, &netlink.Addr{IPNet: &net.IPNet{IP: gatewayIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: outsideIP.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		for _, l := range []netlink.Link{lo, out0} {
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		// The outside can answer unmasqueraded pods too, so a missing
		// masquerade shows as the pod's address instead of a hang.
		return netlink.RouteAdd(&netlink.Route{LinkIndex: out0.Attrs().Index, Dst: linux.IPNet(clusterCIDR), Gw: nodeIP.AsSlice()})
	})
	return top
}

// pod is a pod namespace with eth0 holding ip, its host side hostIf in the
// node namespace, routed through the link-local gateway 169.254.1.1.
type pod struct {
	ns  ns.NetNS
	ep  *state.Endpoint
	mac net.HardwareAddr
}

func newPod(t *testing.T, node ns.NetNS, hostIf, ip string) pod {
	t.Helper()
	p := pod{ns: newNS(t)}
	var hostMAC net.HardwareAddr
	in(t, node, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIf}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(p.ns.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth %s: %w", hostIf, err)
		}
		l, err := netlinksafe.LinkByName(hostIf)
		if err != nil {
			return err
		}
		hostMAC = l.Attrs().HardwareAddr
		return netlink.LinkSetUp(l)
	})
	gw := net.IPv4(169, 254, 1, 1)
	in(t, p.ns, func() error {
		l, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		p.mac = l.Attrs().HardwareAddr
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}); err != nil {
			return err
		}
		return netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: hostMAC})
	})
	p.ep = &state.Endpoint{Attachment: state.Attachment{ContainerID: "c-" + hostIf, IfName: "eth0"}, IP: netip.MustParseAddr(ip),
		Netns: p.ns.Path(), HostIfName: hostIf, PodMAC: p.mac}
	return p
}

// logBuffer collects the datapath's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func newDatapath(t *testing.T, logs *logBuffer, opts datapath.Options) *Datapath {
	t.Helper()
	if logs == nil {
		logs = &logBuffer{}
	}
	d, err := New(slog.New(slog.NewTextHandler(logs, nil)), testNode, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// gliaRoutes lists the node's IPv4 routes of glia's protocol as "dst type dev/gw scope".
func gliaRoutes(t *testing.T) []string {
	t.Helper()
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: linux.RouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		s := r.Dst.String()
		switch r.Type {
		case unix.RTN_UNREACHABLE:
			s += " unreachable"
		case unix.RTN_UNICAST:
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				s += " dev " + l.Attrs().Name
			}
			if r.Scope == netlink.SCOPE_LINK {
				s += " scope link"
			}
		default:
			s += fmt.Sprintf(" type %d", r.Type)
		}
		out = append(out, s)
	}
	return out
}

// neighList dumps a link's IPv4 neighbours, retrying an interrupted dump
// (netlinksafe has no wrapper for neighbours).
func neighList(index int) ([]netlink.Neigh, error) {
	for {
		n, err := netlink.NeighList(index, unix.AF_INET)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return n, err
		}
	}
}

func sysctl(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func natRules(t *testing.T, chain string) []string {
	t.Helper()
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		t.Fatal(err)
	}
	exists, err := ipt.ChainExists("nat", chain)
	if err != nil {
		t.Fatal(err)
	}
	if !exists {
		return nil
	}
	rules, err := ipt.List("nat", chain)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

const (
	wantMasqRule = `-A GLIA-POSTROUTING -s 198.19.1.0/24 ! -d 198.19.0.0/16 ! -o gl+ -m comment --comment "glia: masquerade traffic leaving the cluster" -j MASQUERADE`
	wantJump     = `-A POSTROUTING -m comment --comment "glia: masquerade" -j GLIA-POSTROUTING`
)

func TestPrivilegedInit(t *testing.T) {
	requireRoot(t)
	top := newTopology(t)
	ctx := context.Background()
	in(t, top.node, func() error {
		if got := sysctl(t, "net/ipv4/ip_forward"); got != "0" {
			t.Fatalf("a fresh namespace has ip_forward=%s, want 0 (is this the host namespace?)", got)
		}
		logs := &logBuffer{}
		d := newDatapath(t, logs, opts(true, false))
		// Twice: Init is re-run on every agent start.
		for i := 0; i < 2; i++ {
			if err := initHost(ctx, d); err != nil {
				t.Fatalf("Init #%d: %v", i+1, err)
			}
		}
		if got := sysctl(t, "net/ipv4/ip_forward"); got != "1" {
			t.Errorf("ip_forward = %s, want 1", got)
		}
		if got := sysctl(t, "net/ipv4/conf/all/rp_filter"); got != "0" {
			t.Errorf("conf/all/rp_filter = %s, want 0", got)
		}
		if diff := cmp.Diff([]string{"198.19.1.0/24 unreachable"}, gliaRoutes(t)); diff != "" {
			t.Errorf("routes (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"-N GLIA-POSTROUTING", wantMasqRule}, natRules(t, masqChain)); diff != "" {
			t.Errorf("GLIA-POSTROUTING (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"-P POSTROUTING ACCEPT", wantJump}, natRules(t, "POSTROUTING")); diff != "" {
			t.Errorf("POSTROUTING (-want +got):\n%s", diff)
		}
		// The rule is in place: ensuring it again changes nothing.
		if changed, err := linux.EnsureMasquerade(podCIDR, clusterCIDR); changed || err != nil {
			t.Errorf("EnsureMasquerade on a node that has the rule: changed %t, %v", changed, err)
		}
		got, err := linux.MasqueradeRules()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"-N GLIA-POSTROUTING", wantMasqRule}, got); diff != "" {
			t.Errorf("MasqueradeRules (-want +got):\n%s", diff)
		}

		// Drift: someone adds a rule to glia's chain; Init puts it back to exactly ours.
		ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
		if err != nil {
			t.Fatal(err)
		}
		if err := ipt.Insert("nat", masqChain, 1, "-s", "198.19.1.7/32", "-j", "RETURN"); err != nil {
			t.Fatal(err)
		}
		if err := initHost(ctx, d); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"-N GLIA-POSTROUTING", wantMasqRule}, natRules(t, masqChain)); diff != "" {
			t.Errorf("GLIA-POSTROUTING after repair (-want +got):\n%s", diff)
		}

		// Masquerading turned off: the chain and the jump go away.
		off := newDatapath(t, nil, opts(false, false))
		if err := initHost(ctx, off); err != nil {
			t.Fatal(err)
		}
		if got := natRules(t, masqChain); got != nil {
			t.Errorf("GLIA-POSTROUTING with masquerade off = %q, want no chain", got)
		}
		if diff := cmp.Diff([]string{"-P POSTROUTING ACCEPT"}, natRules(t, "POSTROUTING")); diff != "" {
			t.Errorf("POSTROUTING with masquerade off (-want +got):\n%s", diff)
		}
		if got, err := linux.MasqueradeRules(); err != nil || got != nil {
			t.Errorf("MasqueradeRules with masquerade off = %q, %v; want none", got, err)
		}
		// ... and off again is fine.
		return initHost(ctx, off)
	})
}

func TestPrivilegedEnsureRemoveMasquerade(t *testing.T) {
	requireRoot(t)
	top := newTopology(t)
	in(t, top.node, func() error {
		for i := 0; i < 2; i++ {
			if changed, err := linux.EnsureMasquerade(podCIDR, clusterCIDR); err != nil || changed != (i == 0) {
				t.Fatalf("EnsureMasquerade #%d: changed %t, %v", i+1, changed, err)
			}
		}
		if diff := cmp.Diff([]string{"-N GLIA-POSTROUTING", wantMasqRule}, natRules(t, masqChain)); diff != "" {
			t.Errorf("GLIA-POSTROUTING (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"-P POSTROUTING ACCEPT", wantJump}, natRules(t, "POSTROUTING")); diff != "" {
			t.Errorf("POSTROUTING (-want +got):\n%s", diff)
		}
		for i := 0; i < 2; i++ {
			if _, err := linux.RemoveMasquerade(); err != nil {
				t.Fatalf("RemoveMasquerade #%d: %v", i+1, err)
			}
		}
		if got := natRules(t, masqChain); got != nil {
			t.Errorf("GLIA-POSTROUTING after RemoveMasquerade = %q", got)
		}
		if diff := cmp.Diff([]string{"-P POSTROUTING ACCEPT"}, natRules(t, "POSTROUTING")); diff != "" {
			t.Errorf("POSTROUTING after RemoveMasquerade (-want +got):\n%s", diff)
		}
		return nil
	})
}

func TestPrivilegedEndpoints(t *testing.T) {
	requireRoot(t)
	top := newTopology(t)
	p1 := newPod(t, top.node, "glpod1", "198.19.1.5")
	p2 := newPod(t, top.node, "glpod2", "198.19.1.6")
	ctx := context.Background()
	in(t, top.node, func() error {
		// Someone else's /32 (not glia's protocol) must survive every sync.
		eth0, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		foreign := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(198, 19, 1, 200), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC}
		if err := netlink.RouteAdd(foreign); err != nil {
			t.Fatal(err)
		}

		d := newDatapath(t, nil, opts(true, false))
		if err := initHost(ctx, d); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			for _, p := range []pod{p1, p2} {
				if err := upsert(ctx, d, p.ep); err != nil {
					t.Fatalf("UpsertEndpoint %s: %v", p.ep.HostIfName, err)
				}
			}
		}
		want := []string{"198.19.1.0/24 unreachable", "198.19.1.5/32 dev glpod1 scope link", "198.19.1.6/32 dev glpod2 scope link"}
		if diff := cmp.Diff(want, gliaRoutes(t)); diff != "" {
			t.Errorf("routes after UpsertEndpoint (-want +got):\n%s", diff)
		}
		for _, p := range []pod{p1, p2} {
			l, err := netlinksafe.LinkByName(p.ep.HostIfName)
			if err != nil {
				t.Fatal(err)
			}
			neighs, err := neighList(l.Attrs().Index)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, n := range neighs {
				got = append(got, fmt.Sprintf("%s %s permanent=%v", n.IP, n.HardwareAddr, n.State&netlink.NUD_PERMANENT != 0))
			}
			if diff := cmp.Diff([]string{fmt.Sprintf("%s %s permanent=true", p.ep.IP, p.mac)}, got); diff != "" {
				t.Errorf("neighbours on %s (-want +got):\n%s", p.ep.HostIfName, diff)
			}
		}

		// A sync keeps the live one and prunes the stale /32.
		if err := syncEndpoints(ctx, d, p1.ep); err != nil {
			t.Fatal(err)
		}
		want = []string{"198.19.1.0/24 unreachable", "198.19.1.5/32 dev glpod1 scope link"}
		if diff := cmp.Diff(want, gliaRoutes(t)); diff != "" {
			t.Errorf("routes after SyncEndpoints (-want +got):\n%s", diff)
		}
		// A refresh repairs a route deleted behind the datapath's back, and
		// reports the drift.
		if err := netlink.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4(198, 19, 1, 5), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK, Protocol: linux.RouteProtocol}); err != nil {
			t.Fatal(err)
		}
		var drifted []string
		d.opts.Drift = func(rec, obj, what string) { drifted = append(drifted, rec+" "+obj+": "+what) }
		if err := syncEndpoints(ctx, d, refreshing(p1.ep), p2.ep); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"endpoints c-glpod1/eth0: route to 198.19.1.5 was missing or wrong"}, drifted); diff != "" {
			t.Errorf("drift reported (-want +got):\n%s", diff)
		}
		want = []string{"198.19.1.0/24 unreachable", "198.19.1.5/32 dev glpod1 scope link", "198.19.1.6/32 dev glpod2 scope link"}
		if diff := cmp.Diff(want, gliaRoutes(t)); diff != "" {
			t.Errorf("routes after SyncEndpoints repair (-want +got):\n%s", diff)
		}

		// Delete removes the route; twice is fine.
		for i := 0; i < 2; i++ {
			if err := d.Endpoints().Delete(ctx, nil, 0, p2.ep); err != nil {
				t.Fatalf("DeleteEndpoint #%d: %v", i+1, err)
			}
		}
		want = []string{"198.19.1.0/24 unreachable", "198.19.1.5/32 dev glpod1 scope link"}
		if diff := cmp.Diff(want, gliaRoutes(t)); diff != "" {
			t.Errorf("routes after DeleteEndpoint (-want +got):\n%s", diff)
		}
		if _, err := netlink.RouteGet(net.IPv4(198, 19, 1, 200)); err != nil {
			t.Errorf("foreign route gone: %v", err)
		}
		all, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: unix.RTPROT_STATIC}, netlink.RT_FILTER_PROTOCOL)
		if err != nil || len(all) != 1 {
			t.Errorf("static routes = %v, %v; want the foreign /32 untouched", all, err)
		}

		// Bad input is an error naming the endpoint.
		bad := *p1.ep
		bad.HostIfName = "glnope"
		if err := upsert(ctx, d, &bad); err == nil || !strings.Contains(err.Error(), "glnope") {
			t.Errorf("Update with a missing veth = %v, want an error naming it", err)
		}
		return nil
	})
}

func TestPrivilegedSyncNodes(t *testing.T) {
	requireRoot(t)
	top := newTopology(t)
	ctx := context.Background()
	n := func(name, ip, cidr string) *state.Node {
		return &state.Node{Name: name, IP: netip.MustParseAddr(ip), PodCIDR: netip.MustParsePrefix(cidr)}
	}
	self := n("lab-node-1", "198.18.0.11", "198.19.1.0/24")
	self.Local = true
	n2 := n("lab-node-2", "198.18.0.12", "198.19.2.0/24")
	n3 := n("lab-node-3", "198.18.0.13", "198.19.3.0/24")
	unmasked := n("lab-node-4", "198.18.0.14", "198.19.4.7/24")
	in(t, top.node, func() error {
		// A route somebody else installed via a gateway stays.
		eth0, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(198, 19, 9, 0), Mask: net.CIDRMask(24, 32)},
			Gw: net.IPv4(198, 18, 0, 19), Protocol: unix.RTPROT_STATIC}); err != nil {
			t.Fatal(err)
		}
		d := newDatapath(t, nil, opts(true, true))
		if err := initHost(ctx, d); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name  string
			nodes []*state.Node
			want  []string
		}{
			{name: "all nodes, own ignored", nodes: []*state.Node{self, n2, n3, unmasked}, want: []string{
				"198.19.1.0/24 unreachable",
				"198.19.2.0/24 via 198.18.0.12 dev eth0",
				"198.19.3.0/24 via 198.18.0.13 dev eth0",
				"198.19.4.0/24 via 198.18.0.14 dev eth0",
			}},
			{name: "again: nothing changes", nodes: []*state.Node{n3, unmasked, n2, self}, want: []string{
				"198.19.1.0/24 unreachable",
				"198.19.2.0/24 via 198.18.0.12 dev eth0",
				"198.19.3.0/24 via 198.18.0.13 dev eth0",
				"198.19.4.0/24 via 198.18.0.14 dev eth0",
			}},
			{name: "node 3 and 4 gone", nodes: []*state.Node{n2}, want: []string{
				"198.19.1.0/24 unreachable",
				"198.19.2.0/24 via 198.18.0.12 dev eth0",
			}},
			{name: "node 2 moved to another address", nodes: []*state.Node{n("lab-node-2", "198.18.0.22", "198.19.2.0/24")}, want: []string{
				"198.19.1.0/24 unreachable",
				"198.19.2.0/24 via 198.18.0.22 dev eth0",
			}},
			{name: "incomplete nodes are skipped", nodes: []*state.Node{{Name: "no-ip", PodCIDR: netip.MustParsePrefix("198.19.5.0/24")},
				{Name: "no-cidr", IP: netip.MustParseAddr("198.18.0.15")}}, want: []string{
				"198.19.1.0/24 unreachable",
			}},
		}
		for _, s := range steps {
			if err := syncNodes(ctx, d, s.nodes...); err != nil {
				t.Fatalf("%s: SyncNodes: %v", s.name, err)
			}
			if diff := cmp.Diff(s.want, gliaRoutes(t)); diff != "" {
				t.Errorf("%s: routes (-want +got):\n%s", s.name, diff)
			}
		}

		// auto-direct-node-routes off: glia's node routes go away.
		if err := syncNodes(ctx, d, n2, n3); err != nil {
			t.Fatal(err)
		}
		off := newDatapath(t, nil, opts(true, false))
		if err := syncNodes(ctx, off, n2, n3); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"198.19.1.0/24 unreachable"}, gliaRoutes(t)); diff != "" {
			t.Errorf("routes with auto-direct-node-routes=false (-want +got):\n%s", diff)
		}
		if r, err := netlink.RouteGet(net.IPv4(198, 19, 9, 1)); err != nil || len(r) != 1 || !r[0].Gw.Equal(net.IPv4(198, 18, 0, 19)) {
			t.Errorf("foreign route via 198.18.0.19: %v, %v; want it untouched", r, err)
		}

		// A missing node device is an error naming it.
		bad := &Datapath{log: d.log, node: d.node, opts: d.opts}
		bad.node.Device = "nope0"
		if err := syncNodes(ctx, bad, n2); err == nil || !strings.Contains(err.Error(), "nope0") {
			t.Errorf("SyncNodes without the device = %v, want an error naming it", err)
		}
		return nil
	})
}

func TestNewRefuses(t *testing.T) {
	log := slog.New(slog.NewTextHandler(&logBuffer{}, nil))
	tests := []struct {
		name string
		opts datapath.Options
		want string
	}{
		{name: "tunnel", opts: datapath.Options{Modes: config.Modes{RoutingMode: "tunnel"}}, want: `routing-mode=native only (got "tunnel")`},
		{name: "bpf masquerade", opts: datapath.Options{Modes: config.Modes{RoutingMode: "native", Masquerading: config.MasqBPF}}, want: "use the bpf datapath"},
		{name: "kube-proxy replacement", opts: datapath.Options{Modes: config.Modes{RoutingMode: "native", KubeProxyReplacement: true}}, want: "use the bpf datapath"},
		{name: "bpf host routing", opts: datapath.Options{Modes: config.Modes{RoutingMode: "native", HostRouting: config.HostRouting{Mode: config.HostRoutingBPF}}}, want: "use the bpf datapath"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(log, testNode, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestPrivilegedMasqueradeTraffic sends real traffic from a pod through the
// node to the "outside" namespace: the outside sees the node's address.
// Traffic to another node's pod (the outside namespace plays that node too,
// reached by a SyncNodes route) keeps the pod's address.
func TestPrivilegedMasqueradeTraffic(t *testing.T) {
	requireRoot(t)
	top := newTopology(t)
	p := newPod(t, top.node, "glpod1", "198.19.1.5")
	remotePod := netip.MustParseAddr("198.19.2.10")
	ctx := context.Background()
	in(t, top.node, func() error {
		d := newDatapath(t, nil, opts(true, true))
		if err := initHost(ctx, d); err != nil {
			return err
		}
		if err := upsert(ctx, d, p.ep); err != nil {
			return err
		}
		return syncNodes(ctx, d, &state.Node{Name: "lab-node-2", IP: gatewayIP, PodCIDR: netip.MustParsePrefix("198.19.2.0/24")})
	})

	// Servers in the outside namespace answer with the source they saw.
	var lns []net.Listener
	in(t, top.outside, func() error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: linux.Host32(remotePod)}); err != nil {
			return err
		}
		for _, a := range []netip.Addr{outsideIP, remotePod} {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(a, 80).String())
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	})
	for _, ln := range lns {
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintln(c, host)
				c.Close()
			}
		}()
	}

	ask := func(n ns.NetNS, dst netip.Addr) string {
		t.Helper()
		var seen string
		in(t, n, func() error {
			c, err := net.Dial("tcp", netip.AddrPortFrom(dst, 80).String())
			if err != nil {
				return fmt.Errorf("dial %s: %w", dst, err)
			}
			defer c.Close()
			seen, err = bufio.NewReader(c).ReadString('\n')
			return err
		})
		return strings.TrimSpace(seen)
	}
	tests := []struct {
		name string
		from ns.NetNS
		dst  netip.Addr
		want netip.Addr
	}{
		{name: "pod to the outside is masqueraded", from: p.ns, dst: outsideIP, want: nodeIP},
		{name: "pod to another node's pod is not", from: p.ns, dst: remotePod, want: netip.MustParseAddr("198.19.1.5")},
		{name: "node to the outside leaves with its address", from: top.node, dst: outsideIP, want: nodeIP},
	}
	for _, tt := range tests {
		if got := ask(tt.from, tt.dst); got != tt.want.String() {
			t.Errorf("%s: the server saw %s, want %s", tt.name, got, tt.want)
		}
	}
}
