package bpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

// Two nodes wired eth0 to eth0, one pod each (and a second pod on node
// 1): pod traffic between nodes, natively routed (auto-direct-node-routes)
// or through the VXLAN tunnel, a Service whose backend is on the other
// node, and pods reaching NodePorts on their own node's address and on
// another node's, with a local and a remote backend.
func TestPrivilegedTwoNodes(t *testing.T) {
	requirePrivileged(t)
	for _, mode := range []string{"native", "tunnel"} {
		for _, hr := range []string{"bpf-host-routing", "legacy-host-routing"} {
			t.Run(mode+"/"+hr, func(t *testing.T) { testTwoNodes(t, mode, hr == "bpf-host-routing") })
		}
	}
}

func testTwoNodes(t *testing.T, mode string, hostRouting bool) {
	bpffs := privateBPFFS(t)
	n1, n2, p1, p2, p3 := newNS(t), newNS(t), newNS(t), newNS(t), newNS(t)

	var lxc1, lxc2, lxc3 netlink.Link
	must(t, n1.Do(func(ns.NetNS) error {
		lxc1 = vethInto(t, "lxc1", p1, "eth0")
		lxc3 = vethInto(t, "lxc3", p3, "eth0")
		eth0 := vethInto(t, "eth0", n2, "eth0")
		a, _ := netlink.ParseAddr("198.18.0.11/24")
		return netlink.AddrAdd(eth0, a)
	}))
	must(t, n2.Do(func(ns.NetNS) error {
		lxc2 = vethInto(t, "lxc2", p2, "eth0")
		eth0, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("198.18.0.12/24")
		return netlink.AddrAdd(eth0, a)
	}))
	setupPod(t, p1, "198.19.1.10", lxc1.Attrs().HardwareAddr)
	setupPod(t, p2, "198.19.2.20", lxc2.Attrs().HardwareAddr)
	setupPod(t, p3, "198.19.1.30", lxc3.Attrs().HardwareAddr)
	podMTU := 1500
	if mode == "tunnel" {
		// what the agent gives pods in tunnel mode: the device's MTU
		// less the VXLAN overhead
		podMTU = 1500 - vxlanOverhead
		setMTU(t, p1, "eth0", podMTU)
		setMTU(t, p2, "eth0", podMTU)
		setMTU(t, p3, "eth0", podMTU)
	}
	echoServer(t, p2, "198.19.2.20:8080")
	echoServer(t, p3, "198.19.1.30:8080")

	nodes := []*state.Node{
		{Name: "n1", IP: netip.MustParseAddr("198.18.0.11"), PodCIDR: netip.MustParsePrefix("198.19.1.0/24")},
		{Name: "n2", IP: netip.MustParseAddr("198.18.0.12"), PodCIDR: netip.MustParsePrefix("198.19.2.0/24")},
	}
	services := []svcPort{{Namespace: "default", Name: "echo", Protocol: "TCP",
		Frontend: netip.MustParseAddrPort("198.18.128.10:80"), NodePort: 30080,
		Backends: []state.Backend{{Addr: netip.MustParseAddrPort("198.19.2.20:8080"), Ready: true}}},
		{Namespace: "default", Name: "echo-n1", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.11:80"), NodePort: 30081,
			Backends: []state.Backend{{Addr: netip.MustParseAddrPort("198.19.1.30:8080"), Ready: true}}},
		{Namespace: "default", Name: "empty", Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.18.128.12:80"), NodePort: 30082}}

	type pod struct {
		host, ip string
		netns    ns.NetNS
	}
	start := func(netns ns.NetNS, i int, pods ...pod) *Datapath {
		t.Helper()
		local := datapath.LocalNode{Name: nodes[i].Name, IP: nodes[i].IP, Device: "eth0", PodCIDR: nodes[i].PodCIDR,
			ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16")}
		opts := testOpts{RoutingMode: mode, AutoDirectNodeRoutes: true, KubeProxyReplacement: true,
			Masquerade: true, BPFMasquerade: true, HostRoutingBPF: hostRouting, LBAlgorithm: "maglev", MTU: podMTU,
			BPFFSDir: filepath.Join(bpffs, nodes[i].Name)}
		var dp *Datapath
		must(t, netns.Do(func(ns.NetNS) error {
			var err error
			if dp, err = New(testLogger(), local, opts.options()); err != nil {
				return err
			}
			ctx := context.Background()
			if err := initHost(ctx, dp); err != nil {
				return err
			}
			for _, p := range pods {
				ep := &state.Endpoint{Attachment: state.Attachment{ContainerID: p.host, IfName: "eth0"}, IP: netip.MustParseAddr(p.ip), HostIfName: p.host, Netns: p.netns.Path()}
				if err := upsert(ctx, dp, ep); err != nil {
					return err
				}
			}
			var others []*state.Node
			for j, n := range nodes {
				if j != i {
					others = append(others, n)
				}
			}
			if err := syncNodes(ctx, dp, others...); err != nil {
				return err
			}
			return syncServices(ctx, dp, services)
		}))
		return dp
	}
	dp1 := start(n1, 0, pod{"lxc1", "198.19.1.10", p1}, pod{"lxc3", "198.19.1.30", p3})
	dp2 := start(n2, 1, pod{"lxc2", "198.19.2.20", p2})
	t.Cleanup(func() {
		dp1.Close()
		dp2.Close()
	})
	t.Cleanup(func() {
		if t.Failed() {
			for i, dp := range []*Datapath{dp1, dp2} {
				if dp.objs == nil {
					continue
				}
				rows, _ := maps.NewMetrics(dp.objs.Maps[maps.NameMetrics]).List()
				t.Logf("node %d counters: %v", i+1, rows)
			}
		}
	})

	t.Run("pod to remote pod", func(t *testing.T) {
		c := dial(t, p1, "198.19.2.20:8080")
		if got := c.roundTrip(t, "across"); !strings.HasPrefix(got, "198.19.1.10:") {
			t.Errorf("server saw %s, want the client pod's address", got)
		}
	})
	t.Run("full-size segments", func(t *testing.T) {
		// Messages larger than the pod MTU: full-size segments must
		// fit through the tunnel without fragmentation.
		c := dial(t, p1, "198.19.2.20:8080")
		big := strings.Repeat("x", 8000)
		if got := c.roundTrip(t, big); !strings.HasPrefix(got, "198.19.1.10:") {
			t.Errorf("server saw %s, want the client pod's address", got)
		}
	})
	t.Run("node to remote pod", func(t *testing.T) {
		// the host stack's own traffic follows the node routes
		c := dial(t, n1, "198.19.2.20:8080")
		if got := c.roundTrip(t, "from-node"); !strings.HasPrefix(got, "198.18.0.11:") {
			t.Errorf("server saw %s, want node 1's address", got)
		}
	})
	t.Run("service with a remote backend", func(t *testing.T) {
		c := dial(t, p1, "198.18.128.10:80")
		if got := c.roundTrip(t, "vip"); !strings.HasPrefix(got, "198.19.1.10:") {
			t.Errorf("server saw %s, want the client pod's address", got)
		}
	})
	t.Run("nodeport from the other node's address", func(t *testing.T) {
		// node 2 reaches node 1's NodePort; the backend is back on node 2
		c := dial(t, n2, "198.18.0.11:30080")
		if got := c.roundTrip(t, "nodeport"); !strings.HasPrefix(got, "198.18.0.11:") {
			t.Errorf("server saw %s, want node 1's address (SNAT to a remote backend)", got)
		}
	})
	// A pod reaching a NodePort on a node's address: kube-proxy serves
	// its node's addresses; glia serves every node's, from the pod's
	// node, keeping the pod's address as the source.
	for _, tc := range []struct{ name, addr string }{
		{"pod to its node's nodeport, local backend", "198.18.0.11:30081"},
		{"pod to its node's nodeport, remote backend", "198.18.0.11:30080"},
		{"pod to another node's nodeport, local backend", "198.18.0.12:30081"},
		{"pod to another node's nodeport, remote backend", "198.18.0.12:30080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, p1, tc.addr)
			if got := c.roundTrip(t, "nodeport"); !strings.HasPrefix(got, "198.19.1.10:") {
				t.Errorf("server saw %s, want the client pod's address", got)
			}
			if got := c.c.RemoteAddr().String(); got != tc.addr {
				t.Errorf("client connected to %s, want %s", got, tc.addr)
			}
		})
	}
	t.Run("pod to its node's nodeport without backends", func(t *testing.T) {
		// the host stack would refuse too (nothing listens): the
		// reset must be node 1's program's
		rejects := func() uint64 {
			rows, err := maps.NewMetrics(dp1.objs.Maps[maps.NameMetrics]).List()
			must(t, err)
			for _, r := range rows {
				if r.Reason == maps.MetricRejectRST {
					return r.Packets
				}
			}
			return 0
		}
		before := rejects()
		err := p1.Do(func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp4", "198.18.0.11:30082", 5*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if !errors.Is(err, unix.ECONNREFUSED) {
			t.Errorf("dial: %v, want connection refused", err)
		}
		if after := rejects(); after != before+1 {
			t.Errorf("reject-rst counter went from %d to %d, want one reset by the program", before, after)
		}
	})
	var nodeIPs []string
	must(t, n1.Do(func(ns.NetNS) error {
		list, err := maps.NewNodeIPs(dp1.objs.Maps[maps.NameNodeIPs]).List()
		for _, e := range list {
			nodeIPs = append(nodeIPs, e.String())
		}
		return err
	}))
	sort.Strings(nodeIPs)
	if d := cmp.Diff([]string{"198.18.0.11     local", "198.18.0.12"}, nodeIPs); d != "" {
		t.Errorf("node addresses of node 1 (-want +got):\n%s", d)
	}

	want := "198.19.2.0/24 via 198.18.0.12"
	if mode == "tunnel" {
		want = "198.19.2.0/24 dev " + VXLANDevice + " src 198.18.0.11"
	}
	if got := nodeRoutes(t, n1); len(got) != 1 || got[0] != want {
		t.Errorf("node routes %v, want %s", got, want)
	}
}

// nodeRoutes lists glia's routes to other nodes' pod CIDRs in n.
func nodeRoutes(t *testing.T, n ns.NetNS) []string {
	t.Helper()
	var got []string
	must(t, n.Do(func(ns.NetNS) error {
		rs, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: linux.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		for _, r := range rs {
			ones, _ := r.Dst.Mask.Size()
			switch {
			case r.Gw != nil:
				got = append(got, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
			case ones < 32:
				l, err := netlink.LinkByIndex(r.LinkIndex)
				if err != nil {
					return err
				}
				got = append(got, fmt.Sprintf("%s dev %s src %s", r.Dst, l.Attrs().Name, r.Src))
			}
		}
		return err
	}))
	return got
}

func setMTU(t *testing.T, n ns.NetNS, ifname string, mtu int) {
	t.Helper()
	must(t, n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifname)
		if err != nil {
			return err
		}
		return netlink.LinkSetMTU(l, mtu)
	}))
}
