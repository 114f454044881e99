package bpf

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

func requirePrivileged(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, bpffs and BPF programs")
	}
	f, err := kernel()
	if err != nil {
		t.Fatalf("probe kernel: %v", err)
	}
	if !f.BPFRedirectPeer || !f.BPFRedirectNeigh || !f.FIBLookup {
		t.Skipf("kernel lacks BPF host routing helpers: %+v", f)
	}
}

// privateBPFFS mounts a bpffs of its own under a temporary directory.
func privateBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpffs", dir, "bpf", 0, ""); err != nil {
		t.Skipf("cannot mount a bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		testutils.UnmountNS(n)
	})
	return n
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// vethInto creates hostName in the current namespace with its peer named
// peerName in peer, both up.
func vethInto(t *testing.T, hostName string, peer ns.NetNS, peerName string) netlink.Link {
	t.Helper()
	tmp := "p" + hostName
	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName}, PeerName: tmp,
		PeerNamespace: netlink.NsFd(int(peer.Fd()))}))
	l, err := netlinksafe.LinkByName(hostName)
	must(t, err)
	must(t, netlink.LinkSetUp(l))
	must(t, peer.Do(func(ns.NetNS) error {
		p, err := netlinksafe.LinkByName(tmp)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(p, peerName); err != nil {
			return err
		}
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		return netlink.LinkSetUp(p)
	}))
	return l
}

// setupPod gives a pod its /32 and a default route through the link-local
// gateway, with the gateway's MAC pinned to the host veth.
func setupPod(t *testing.T, pod ns.NetNS, ip string, hostMAC net.HardwareAddr) {
	t.Helper()
	must(t, pod.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(ip + "/32")
		if err := netlink.AddrAdd(l, a); err != nil {
			return err
		}
		gw := net.ParseIP("169.254.1.1")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}); err != nil {
			return err
		}
		return netlink.NeighAdd(&netlink.Neigh{LinkIndex: l.Attrs().Index, State: netlink.NUD_PERMANENT,
			IP: gw, HardwareAddr: hostMAC})
	}))
}

// echoServer accepts in n on addr and echoes lines back, prefixed with
// the client's address as the server saw it.
func echoServer(t *testing.T, n ns.NetNS, addr string) {
	t.Helper()
	var ln net.Listener
	must(t, n.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s", c.RemoteAddr(), line)
				}
			}()
		}
	}()
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, n ns.NetNS, addr string) *client {
	t.Helper()
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c, bufio.NewReader(c)}
}

// roundTrip sends a line and returns the address the server saw.
func (c *client) roundTrip(t *testing.T, msg string) string {
	t.Helper()
	c.c.SetDeadline(time.Now().Add(5 * time.Second)) // a bound, not an assertion
	if _, err := fmt.Fprintf(c.c, "%s\n", msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[1] != msg {
		t.Fatalf("echo %q, want <addr> %s", line, msg)
	}
	return f[0]
}

func TestPrivilegedDatapath(t *testing.T) {
	requirePrivileged(t)
	for _, mode := range []string{"tcx", "tc"} {
		t.Run(mode, func(t *testing.T) { testDatapath(t, mode == "tc") })
	}
}

func testDatapath(t *testing.T, forceTC bool) {
	bpffs := privateBPFFS(t)
	node, pod1, pod2, outside := newNS(t), newNS(t), newNS(t), newNS(t)

	var lxc1, lxc2 netlink.Link
	must(t, node.Do(func(ns.NetNS) error {
		lxc1 = vethInto(t, "lxc1", pod1, "eth0")
		lxc2 = vethInto(t, "lxc2", pod2, "eth0")
		eth0 := vethInto(t, "eth0", outside, "ext0")
		a, _ := netlink.ParseAddr("198.18.0.11/24")
		if err := netlink.AddrAdd(eth0, a); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP("198.18.0.254")})
	}))
	must(t, outside.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName("ext0")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("198.18.0.254/24")
		return netlink.AddrAdd(l, a)
	}))
	setupPod(t, pod1, "198.19.1.10", lxc1.Attrs().HardwareAddr)
	setupPod(t, pod2, "198.19.1.20", lxc2.Attrs().HardwareAddr)
	echoServer(t, pod2, "198.19.1.20:8080")
	echoServer(t, outside, "198.18.0.254:9000")

	local := datapath.LocalNode{Name: "node1", IP: netip.MustParseAddr("198.18.0.11"), Device: "eth0",
		PodCIDR: netip.MustParsePrefix("198.19.1.0/24"), ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16")}
	opts := testOpts{RoutingMode: "native", KubeProxyReplacement: true, BPFMasquerade: true,
		HostRoutingBPF: true, LBAlgorithm: "random", BPFFSDir: filepath.Join(bpffs, "node1"), MTU: 1500}
	eps := []*state.Endpoint{
		{Attachment: state.Attachment{ContainerID: "c1", IfName: "eth0"}, IP: netip.MustParseAddr("198.19.1.10"), HostIfName: "lxc1", Netns: pod1.Path()},
		{Attachment: state.Attachment{ContainerID: "c2", IfName: "eth0"}, IP: netip.MustParseAddr("198.19.1.20"), HostIfName: "lxc2", Netns: pod2.Path()},
	}
	services := []svcPort{{Namespace: "default", Name: "echo", Protocol: "TCP",
		Frontend: netip.MustParseAddrPort("198.18.128.10:80"),
		Backends: []state.Backend{{Addr: netip.MustParseAddrPort("198.19.1.20:8080"), Ready: true}}}}

	start := func() *Datapath {
		t.Helper()
		var dp *Datapath
		must(t, node.Do(func(ns.NetNS) error {
			var err error
			if dp, err = New(testLogger(), local, opts.options()); err != nil {
				return err
			}
			dp.tcx = dp.tcx && !forceTC
			ctx := context.Background()
			if err := initHost(ctx, dp); err != nil {
				return err
			}
			if err := syncEndpoints(ctx, dp, eps...); err != nil {
				return err
			}
			return syncServices(ctx, dp, services)
		}))
		return dp
	}
	dp := start()

	t.Run("pod to pod", func(t *testing.T) {
		c := dial(t, pod1, "198.19.1.20:8080")
		if got := c.roundTrip(t, "direct"); !strings.HasPrefix(got, "198.19.1.10:") {
			t.Errorf("server saw %s, want the pod's address", got)
		}
		// the packets went through bpf_redirect_peer, not the stack
		rows, err := maps.NewMetrics(dp.objs.Maps[maps.NameMetrics]).List()
		must(t, err)
		redirected := false
		for _, r := range rows {
			redirected = redirected || (r.Reason == maps.MetricRedirect && r.Packets > 0)
		}
		if !redirected {
			t.Errorf("no packet was redirected by the programs: %v", rows)
		}
	})
	t.Run("service", func(t *testing.T) {
		c := dial(t, pod1, "198.18.128.10:80")
		if got := c.roundTrip(t, "via-vip"); !strings.HasPrefix(got, "198.19.1.10:") {
			t.Errorf("server saw %s, want the pod's address", got)
		}
		if c.c.RemoteAddr().String() != "198.18.128.10:80" {
			t.Errorf("client connected to %s", c.c.RemoteAddr())
		}
	})
	t.Run("hairpin", func(t *testing.T) {
		c := dial(t, pod2, "198.18.128.10:80")
		if got := c.roundTrip(t, "hairpin"); !strings.HasPrefix(got, "169.254.42.1:") {
			t.Errorf("server saw %s, want the hairpin address", got)
		}
	})
	t.Run("masquerade", func(t *testing.T) {
		c := dial(t, pod1, "198.18.0.254:9000")
		if got := c.roundTrip(t, "out"); !strings.HasPrefix(got, "198.18.0.11:") {
			t.Errorf("outside saw %s, want the node's address", got)
		}
	})

	t.Run("masquerade keeps clear of the node's own ports", func(t *testing.T) {
		// The node and a pod use the same source port to the same
		// server: the pod's flow must not take the node's port.
		dialFrom := func(n ns.NetNS, port int) *client {
			t.Helper()
			var c net.Conn
			must(t, n.Do(func(ns.NetNS) error {
				var err error
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{Port: port}}
				c, err = d.Dial("tcp4", "198.18.0.254:9000")
				return err
			}))
			t.Cleanup(func() { c.Close() })
			return &client{c, bufio.NewReader(c)}
		}
		fromNode := dialFrom(node, 40000)
		fromPod := dialFrom(pod1, 40000)
		if got := fromNode.roundTrip(t, "node"); got != "198.18.0.11:40000" {
			t.Errorf("outside saw the node's connection from %s, want 198.18.0.11:40000", got)
		}
		got := fromPod.roundTrip(t, "pod")
		ap, err := netip.ParseAddrPort(got)
		must(t, err)
		if ap.Addr().String() != "198.18.0.11" || ap.Port() < NATPortMin {
			t.Errorf("outside saw the pod's connection from %s, want the node's address and a port from %d", got, NATPortMin)
		}
		// an ephemeral port of the node's is below the NAT range
		eph := dial(t, node, "198.18.0.254:9000")
		if p := eph.c.LocalAddr().(*net.TCPAddr).Port; p >= NATPortMin {
			t.Errorf("the node picked ephemeral port %d, inside the NAT range", p)
		}
		fromNode.roundTrip(t, "node-again")
	})
	t.Run("restart keeps state and programs", func(t *testing.T) {
		long := dial(t, pod1, "198.18.128.10:80")
		long.roundTrip(t, "before")
		_, ct, _ := dp.Maps()
		before, err := ct.List()
		must(t, err)
		if len(before) == 0 {
			t.Fatal("no CT entries before the restart")
		}
		linkID := func() link.ID {
			var id link.ID
			if forceTC {
				// tc filters are not pinned: check the filter is there
				var n int
				must(t, node.Do(func(ns.NetNS) error {
					fs, err := netlinksafe.FilterList(lxc1, netlink.HANDLE_MIN_INGRESS)
					n = len(fs)
					return err
				}))
				if n != 1 {
					t.Errorf("%d tc filters on lxc1 ingress, want 1", n)
				}
				return 0
			}
			l, err := link.LoadPinnedLink(filepath.Join(opts.BPFFSDir, "links", "from_container-lxc1-ingress"), nil)
			must(t, err)
			defer l.Close()
			info, err := l.Info()
			must(t, err)
			id = info.ID
			return id
		}
		id := linkID()
		svcsBefore := snapshot(t, dp.objs)
		must(t, dp.Close()) // the agent goes away...
		long.roundTrip(t, "while-down")
		dp = start() // ...and comes back
		// it restored what it wrote from the pinned maps: the same
		// services made no map operation and kept their ids
		if ops := dp.lb.ops; ops.Writes+ops.Deletes != 0 {
			t.Errorf("restart and sync of the same services made map changes: %+v", ops)
		}
		if d := cmp.Diff(svcsBefore, snapshot(t, dp.objs)); d != "" {
			t.Errorf("service maps changed across the restart (-before +after):\n%s", d)
		}
		if linkID() != id {
			t.Error("the pod's program link was recreated instead of updated in place")
		}
		_, ct, _ = dp.Maps()
		after, err := ct.List()
		must(t, err)
		have := map[maps.Tuple]bool{}
		for _, r := range after {
			have[r.Key] = true
		}
		for _, r := range before {
			if !have[r.Key] {
				t.Errorf("CT entry lost across restart: %s", r)
			}
		}
		long.roundTrip(t, "after")
	})

	t.Run("endpoint removal", func(t *testing.T) {
		must(t, node.Do(func(ns.NetNS) error {
			return syncEndpoints(context.Background(), dp, eps[:1]...)
		}))
		if _, err := os.Stat(filepath.Join(opts.BPFFSDir, "links", "from_container-lxc2-ingress")); !os.IsNotExist(err) {
			t.Errorf("link of the removed endpoint still pinned: %v", err)
		}
		must(t, node.Do(func(ns.NetNS) error {
			fs, err := netlinksafe.FilterList(lxc2, netlink.HANDLE_MIN_INGRESS)
			if err == nil && len(fs) != 0 {
				t.Errorf("tc filters left on lxc2: %v", fs)
			}
			return err
		}))
		eps, _, _ := dp.Maps()
		list, err := eps.List()
		must(t, err)
		if len(list) != 1 || list[0].Addr.String() != "198.19.1.10" {
			t.Errorf("endpoints after sync: %v", list)
		}
	})
	t.Cleanup(func() { dp.Close() })
}
