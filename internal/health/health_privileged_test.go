package health

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/statedb/reconciler"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/metrics"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

const (
	nodeName   = "lab-node-1"
	nodeAddr   = "198.18.0.11"
	healthAddr = "198.19.1.1"
)

// newNodeNS makes a network namespace playing a node: lo up and an empty bridge
// (this kernel has no dummy links) as underlay device with 198.18.0.11/24.
func newNodeNS(t *testing.T) ns.NetNS {
	t.Helper()
	nodeNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nodeNS.Close()
		if err := testutils.UnmountNS(nodeNS); err != nil {
			t.Errorf("unmount node namespace: %v", err)
		}
	})
	err = nodeNS.Do(func(ns.NetNS) error {
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		underlay := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "underlay0"}}
		if err := netlink.LinkAdd(underlay); err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr(nodeAddr + "/24")
		if err := netlink.AddrAdd(underlay, addr); err != nil {
			return err
		}
		return netlink.LinkSetUp(underlay)
	})
	if err != nil {
		t.Fatalf("set up the node namespace: %v", err)
	}
	return nodeNS
}

// endpointState is what the health namespace looks like, for comparison.
type endpointState struct {
	Addrs  []string
	Routes []string
	Neighs []string
	MTU    int
	Up     bool
}

func readEndpointState(t *testing.T, nsPath string) endpointState {
	t.Helper()
	var st endpointState
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(EndpointIfName)
		if err != nil {
			return err
		}
		st.MTU = link.Attrs().MTU
		st.Up = link.Attrs().Flags&net.FlagUp != 0
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			st.Addrs = append(st.Addrs, a.IPNet.String())
		}
		routes, err := netlinksafe.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			dst := "default"
			if r.Dst != nil && !(r.Dst.IP.IsUnspecified() && maskOnes(r.Dst) == 0) {
				dst = r.Dst.String()
			}
			s := dst
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			s += " scope " + r.Scope.String()
			st.Routes = append(st.Routes, s)
		}
		neighs, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			if n.State&netlink.NUD_PERMANENT != 0 {
				st.Neighs = append(st.Neighs, n.IP.String()+" lladdr "+n.HardwareAddr.String()+" PERMANENT")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read the health namespace: %v", err)
	}
	sort.Strings(st.Addrs)
	sort.Strings(st.Routes)
	sort.Strings(st.Neighs)
	return st
}

func maskOnes(n *net.IPNet) int {
	ones, _ := n.Mask.Size()
	return ones
}

func TestPrivilegedEndpointAndProber(t *testing.T) {
	requireRoot(t)
	rootPingRange, err := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	if err != nil {
		t.Fatal(err)
	}
	log := testLogger(t)
	nodeNS := newNodeNS(t)
	stateDir := t.TempDir()
	cfg := EndpointConfig{
		StateDir: stateDir,
		NodeName: nodeName,
		IP:       netip.MustParseAddr(healthAddr),
		MTU:      1450,
	}

	setup := func() *Endpoint {
		t.Helper()
		var ep *Endpoint
		err := nodeNS.Do(func(ns.NetNS) error {
			var err error
			ep, err = SetupEndpoint(log, cfg)
			return err
		})
		if err != nil {
			t.Fatalf("SetupEndpoint: %v", err)
		}
		return ep
	}
	ep := setup()
	t.Cleanup(func() {
		if err := nodeNS.Do(func(ns.NetNS) error { return ep.Remove() }); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	nsPath := filepath.Join(stateDir, NetnsFileName)
	api := ep.State()
	if api.ContainerID != EndpointContainerID || api.IfName != "eth0" || api.HostIfName != "glhealth0" ||
		api.IP.String() != healthAddr || api.Netns != nsPath || api.HostIfIndex == 0 || len(api.HostMAC) == 0 || len(api.PodMAC) == 0 {
		t.Errorf("State() = %+v", api)
	}

	// The datapath's job in production: route the endpoint's /32 to its veth.
	err = nodeNS.Do(func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(EndpointHostIfName)
		if err != nil {
			return err
		}
		if link.Attrs().MTU != 1450 || link.Attrs().Flags&net.FlagUp == 0 || link.Attrs().Index != api.HostIfIndex {
			t.Errorf("%s: mtu %d, flags %v, index %d", EndpointHostIfName, link.Attrs().MTU, link.Attrs().Flags, link.Attrs().Index)
		}
		return netlink.RouteAdd(&netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       &net.IPNet{IP: net.ParseIP(healthAddr).To4(), Mask: net.CIDRMask(32, 32)},
			Scope:     netlink.SCOPE_LINK,
		})
	})
	if err != nil {
		t.Fatalf("route to the health endpoint: %v", err)
	}

	wantState := endpointState{
		Addrs:  []string{healthAddr + "/32"},
		Routes: []string{"169.254.1.1/32 scope link", "default via 169.254.1.1 scope universe"},
		Neighs: []string{"169.254.1.1 lladdr " + api.HostMAC.String() + " PERMANENT"},
		MTU:    1450,
		Up:     true,
	}
	if diff := cmp.Diff(wantState, readEndpointState(t, nsPath)); diff != "" {
		t.Errorf("health namespace (-want +got):\n%s", diff)
	}

	// Idempotent: a second setup (an agent restart) changes nothing.
	if diff := cmp.Diff(api, setup().State(), cmpopts.IgnoreTypes(reconciler.Status{}), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("second SetupEndpoint (-first +second):\n%s", diff)
	}
	if diff := cmp.Diff(wantState, readEndpointState(t, nsPath)); diff != "" {
		t.Errorf("health namespace after the second setup (-want +got):\n%s", diff)
	}

	// The agent's /hello on the node address.
	var hostLn net.Listener
	err = nodeNS.Do(func(ns.NetNS) error {
		var err error
		hostLn, err = net.Listen("tcp4", nodeAddr+":4240")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	hostCtx, hostCancel := context.WithCancel(context.Background())
	hostDone := make(chan error, 1)
	go func() { hostDone <- Serve(hostCtx, hostLn, HelloHandler(nodeName)) }()
	t.Cleanup(func() {
		hostCancel()
		if err := <-hostDone; err != nil {
			t.Errorf("host hello server: %v", err)
		}
	})

	if err := ep.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}

	m := metrics.New()
	targets := []Target{
		{Node: nodeName, HostIP: netip.MustParseAddr(nodeAddr), EndpointIP: netip.MustParseAddr(healthAddr), Local: true},
		// No route to the outside world in the node namespace: both
		// probes fail at once, and nothing is sent.
		{Node: "lab-node-9", HostIP: netip.MustParseAddr("198.18.64.10")},
	}
	p, err := NewProber(log, ProberConfig{
		NodeName: nodeName, Port: 4240, Netns: nodeNS.Path(), Timeout: 10 * time.Second, Recorder: m,
	}, func() []Target { return targets })
	if err != nil {
		t.Fatal(err)
	}
	okRes := ProbeResult{OK: true}
	local := NodeStatus{
		Name: nodeName, Local: true,
		Host:     PathStatus{Addr: netip.MustParseAddr(nodeAddr), ICMP: okRes, HTTP: okRes},
		Endpoint: &PathStatus{Addr: netip.MustParseAddr(healthAddr), ICMP: okRes, HTTP: okRes},
	}
	unroutable := NodeStatus{
		Name: "lab-node-9",
		Host: PathStatus{
			Addr: netip.MustParseAddr("198.18.64.10"),
			ICMP: ProbeResult{Err: "network is unreachable"},
			HTTP: ProbeResult{Err: "network is unreachable"},
		},
	}
	opts := cmp.Options{
		cmp.Comparer(func(x, y netip.Addr) bool { return x == y }),
		cmpopts.IgnoreFields(ProbeResult{}, "RTT"),
		cmpopts.IgnoreFields(Report{}, "ProbeTime", "Interval"),
	}
	rep := p.ProbeOnce(context.Background())
	if diff := cmp.Diff(Report{Nodes: []NodeStatus{local, unroutable}}, rep, opts); diff != "" {
		t.Fatalf("round with everything up (-want +got):\n%s", diff)
	}
	if got := rep.Summary(); got.Reachable != 1 || got.Total != 2 || !cmp.Equal(got.Unreachable, []string{"lab-node-9"}) {
		t.Errorf("summary = %+v", got)
	}
	if got := reachableValue(t, m, nodeName); got != 1 {
		t.Errorf("glia_health_reachable{node=%q} = %v, want 1", nodeName, got)
	}

	// Both kinds of ICMP socket reach the endpoint. A new namespace's
	// ping_group_range admits nobody: the datagram socket is refused
	// until the range is set there (never in the host's namespace).
	pg := newPinger(nodeNS.Path())
	dst := netip.MustParseAddr(healthAddr)
	if _, err := pg.pingWith(context.Background(), icmpRaw, dst); err != nil {
		t.Errorf("raw ICMP: %v", err)
	}
	if _, err := pg.pingWith(context.Background(), icmpDgram, dst); !errors.Is(err, unix.EACCES) {
		t.Errorf("datagram ICMP with the default ping_group_range: err = %v, want EACCES", err)
	}
	err = nodeNS.Do(func(ns.NetNS) error {
		return os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pg.pingWith(context.Background(), icmpDgram, dst); err != nil {
		t.Errorf("datagram ICMP: %v", err)
	}
	if got, _ := os.ReadFile("/proc/sys/net/ipv4/ping_group_range"); !bytes.Equal(got, rootPingRange) {
		t.Fatalf("the host's ping_group_range changed: %q → %q", rootPingRange, got)
	}

	// Stop the endpoint's server: HTTP to it is refused, ICMP still works,
	// the node is unreachable and the report says why.
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ep.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	rep = p.ProbeOnce(context.Background())
	down := local
	down.Endpoint = &PathStatus{Addr: netip.MustParseAddr(healthAddr), ICMP: okRes, HTTP: ProbeResult{Err: "connection refused"}}
	if diff := cmp.Diff(Report{Nodes: []NodeStatus{down, unroutable}}, rep, opts); diff != "" {
		t.Errorf("round with the endpoint server stopped (-want +got):\n%s", diff)
	}
	if got := rep.Summary(); !cmp.Equal(got.Unreachable, []string{nodeName, "lab-node-9"}) {
		t.Errorf("unreachable = %v", got.Unreachable)
	}
	var out bytes.Buffer
	if err := Render(&out, rep, false); err != nil {
		t.Fatal(err)
	}
	if want := "  " + nodeName + ": endpoint " + healthAddr + ": HTTP to agent: connection refused\n"; !strings.Contains(out.String(), want) {
		t.Errorf("Render does not contain %q:\n%s", want, out.String())
	}
	if got := reachableValue(t, m, nodeName); got != 0 {
		t.Errorf("glia_health_reachable{node=%q} = %v, want 0", nodeName, got)
	}

	// Something broke the namespace while the agent was down: the next
	// setup repairs it without recreating the veth, and serving resumes.
	err = ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(EndpointIfName)
		if err != nil {
			return err
		}
		if err := netlink.RouteDel(&netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			Gw:        net.ParseIP("169.254.1.1").To4(),
		}); err != nil {
			return err
		}
		stale, _ := netlink.ParseAddr("198.19.7.1/32")
		return netlink.AddrAdd(link, stale)
	})
	if err != nil {
		t.Fatal(err)
	}
	ep = setup()
	if diff := cmp.Diff(api, ep.State(), cmpopts.IgnoreTypes(reconciler.Status{}), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("SetupEndpoint after repair (-first +now):\n%s", diff)
	}
	if diff := cmp.Diff(wantState, readEndpointState(t, nsPath)); diff != "" {
		t.Errorf("health namespace after repair (-want +got):\n%s", diff)
	}
	if err := ep.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep = p.ProbeOnce(context.Background())
	if diff := cmp.Diff(Report{Nodes: []NodeStatus{local, unroutable}}, rep, opts); diff != "" {
		t.Errorf("round after restart (-want +got):\n%s", diff)
	}

	// Remove takes the veth and the namespace away, and may run twice.
	if err := nodeNS.Do(func(ns.NetNS) error { return ep.Remove() }); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	err = nodeNS.Do(func(ns.NetNS) error {
		if _, err := netlinksafe.LinkByName(EndpointHostIfName); err == nil {
			t.Errorf("%s still exists after Remove", EndpointHostIfName)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(nsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after Remove: %v", nsPath, err)
	}
}

// reachableValue returns glia_health_reachable{node} as scraped.
func reachableValue(t *testing.T, m *metrics.Metrics, node string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metrics.NameHealthReachable {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "node" && l.GetValue() == node {
					return s.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s series for node %s", metrics.NameHealthReachable, node)
	return 0
}
