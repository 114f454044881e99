package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	bpfdp "glia.dev/glia/internal/datapath/bpf"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/datapath/probe"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/metrics"
	"glia.dev/glia/internal/reconcile"
	"glia.dev/glia/internal/state"
)

// The privileged tests of this file run the agent's own assembly — the
// desired-state tables, the datapath config.Decide names and the
// reconcilers of Agent.specs — against namespaces they make. The
// reconcilers' goroutines run the kernel operations inside the node's
// namespace (inNS), never in the test's own.

func requirePrivileged(t *testing.T) config.KernelProbe {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, bpffs and BPF programs")
	}
	k, err := probe.Kernel()
	if err != nil {
		t.Fatalf("probe kernel: %v", err)
	}
	if !k.BPFRedirectPeer || !k.BPFRedirectNeigh || !k.FIBLookup || !k.TCX {
		t.Skipf("kernel lacks BPF host routing helpers or tcx: %+v", k)
	}
	return k
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

// lab is one node namespace with two pods (gl1 198.19.1.10, gl2
// 198.19.1.20) and an outside namespace on its eth0 (198.18.0.254, the
// default gateway), each pod and the outside serving echo.
type lab struct {
	node, pod1, pod2, outside ns.NetNS
	local                     datapath.LocalNode
	eps                       []*state.Endpoint
	stateDir                  string // the datapath's state dir
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{node: newNS(t), pod1: newNS(t), pod2: newNS(t), outside: newNS(t), stateDir: t.TempDir()}
	var gl1, gl2 netlink.Link
	must(t, l.node.Do(func(ns.NetNS) error {
		gl1 = vethInto(t, "gl1", l.pod1, "eth0")
		gl2 = vethInto(t, "gl2", l.pod2, "eth0")
		eth0 := vethInto(t, "eth0", l.outside, "ext0")
		a, _ := netlink.ParseAddr("198.18.0.11/24")
		if err := netlink.AddrAdd(eth0, a); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP("198.18.0.254")})
	}))
	must(t, l.outside.Do(func(ns.NetNS) error {
		ext, err := netlinksafe.LinkByName("ext0")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("198.18.0.254/24")
		return netlink.AddrAdd(ext, a)
	}))
	// The pods as the CNI plugin configures them.
	for _, p := range []struct {
		n    ns.NetNS
		ip   string
		host netlink.Link
	}{{l.pod1, "198.19.1.10", gl1}, {l.pod2, "198.19.1.20", gl2}} {
		must(t, p.n.Do(func(ns.NetNS) error {
			_, err := linux.ConfigurePodInterface("eth0", netip.MustParseAddr(p.ip), linux.PodGateway, 0, p.host.Attrs().HardwareAddr)
			return err
		}))
	}
	echoServer(t, l.pod1, "198.19.1.10:8080")
	echoServer(t, l.pod2, "198.19.1.20:8080")
	echoServer(t, l.outside, "198.18.0.254:9000")
	l.local = datapath.LocalNode{Name: "node1", IP: netip.MustParseAddr("198.18.0.11"), Device: "eth0",
		PodCIDR: netip.MustParsePrefix("198.19.1.0/24"), ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16")}
	l.eps = []*state.Endpoint{
		{Attachment: state.Attachment{ContainerID: "c1", IfName: "eth0"}, IP: netip.MustParseAddr("198.19.1.10"), HostIfName: "gl1", Netns: l.pod1.Path()},
		{Attachment: state.Attachment{ContainerID: "c2", IfName: "eth0"}, IP: netip.MustParseAddr("198.19.1.20"), HostIfName: "gl2", Netns: l.pod2.Path()},
	}
	return l
}

// modes decides the datapath modes of cm on kernel k, as the agent does.
func modes(t *testing.T, cm map[string]string, k config.KernelProbe) config.Modes {
	t.Helper()
	c, _, err := config.Resolve(config.Inputs{ConfigMap: cm})
	if err != nil {
		t.Fatal(err)
	}
	m := config.Decide(c.Typed(), k)
	must(t, m.Err())
	return m
}

// inNS runs every operation of ops in the node's namespace: the
// reconcilers' goroutines do not live there, as a real agent's do.
type inNS[Obj any] struct {
	n   ns.NetNS
	ops reconciler.Operations[Obj]
}

func (o inNS[Obj]) Update(ctx context.Context, txn statedb.ReadTxn, rev statedb.Revision, obj Obj) error {
	return o.n.Do(func(ns.NetNS) error { return o.ops.Update(ctx, txn, rev, obj) })
}

func (o inNS[Obj]) Delete(ctx context.Context, txn statedb.ReadTxn, rev statedb.Revision, obj Obj) error {
	return o.n.Do(func(ns.NetNS) error { return o.ops.Delete(ctx, txn, rev, obj) })
}

func (o inNS[Obj]) Prune(ctx context.Context, txn statedb.ReadTxn, objs iter.Seq2[Obj, statedb.Revision]) error {
	return o.n.Do(func(ns.NetNS) error { return o.ops.Prune(ctx, txn, objs) })
}

func wrap[Obj any](n ns.NetNS, ops reconciler.Operations[Obj]) reconciler.Operations[Obj] {
	if ops == nil {
		return nil
	}
	return inNS[Obj]{n, ops}
}

// runAgent runs the agent's datapath assembly for the lab's node: the
// datapath m names, Init, the tables holding the lab's endpoints, the
// local node and svcs, and the reconcilers of Agent.specs with periods.
// It returns once everything is reconciled.
func runAgent(t *testing.T, l *lab, m config.Modes, k config.KernelProbe, pinDir string, periods map[string]reconcile.Periods, svcs ...*state.Service) *Agent {
	return runAgentWith(t, l, m, k, pinDir, periods, nil, svcs...)
}

// runAgentWith is runAgent with other nodes in the nodes table.
func runAgentWith(t *testing.T, l *lab, m config.Modes, k config.KernelProbe, pinDir string, periods map[string]reconcile.Periods, others []*state.Node, svcs ...*state.Service) *Agent {
	t.Helper()
	a := &Agent{log: discard(), metrics: metrics.New(), repairs: map[string]uint64{}, periods: periods, node: l.local, modes: m,
		cfg: Config{BPFFSDir: pinDir, Device: l.local.Device}, dpStateDir: l.stateDir}
	opts := datapath.Options{Modes: m, LBAlgorithm: "random", Kernel: k, BPFFSDir: pinDir, StateDir: l.stateDir, MTU: 1500, Drift: a.drift}
	var err error
	if a.dp, err = newDatapath(a.log, l.local, opts); err != nil {
		t.Fatal(err)
	}
	var host datapath.Host
	must(t, l.node.Do(func(ns.NetNS) error {
		var err error
		host, err = a.initDatapath(t.Context())
		return err
	}))
	t.Cleanup(func() { a.dp.Close() })
	if a.tables, err = state.New(); err != nil {
		t.Fatal(err)
	}
	must(t, a.tables.DB.Start())
	insertAll(a.tables.DB, a.tables.Sysctls, host.Sysctls)
	insertAll(a.tables.DB, a.tables.Masquerade, host.Masquerade)
	insertAll(a.tables.DB, a.tables.Programs, host.Programs)
	insertAll(a.tables.DB, a.tables.Endpoints, l.eps)
	insertAll(a.tables.DB, a.tables.Nodes, append([]*state.Node{{Name: l.local.Name, IP: l.local.IP, PodCIDR: l.local.PodCIDR, Local: true}}, others...))
	insertAll(a.tables.DB, a.tables.Services, svcs)
	ops := opsOf(a.dp, opts)
	ops = kernelOps{endpoints: wrap(l.node, ops.endpoints), nodes: wrap(l.node, ops.nodes), sysctls: wrap(l.node, ops.sysctls),
		masquerade: wrap(l.node, ops.masquerade), services: wrap(l.node, ops.services), programs: wrap(l.node, ops.programs)}
	recs, err := reconcile.Start(context.Background(), discard(), a.tables.DB, a.specs(ops)...)
	if err != nil {
		t.Fatal(err)
	}
	a.recs.Store(recs)
	t.Cleanup(func() {
		recs.Stop(context.Background())
		a.tables.DB.Stop()
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	must(t, a.waitProgrammed(ctx))
	for _, r := range a.reconcilerStatus() {
		if r.Errors > 0 || r.Done != r.Objects {
			t.Fatalf("reconciler %s after the first round: %+v", r.Name, r)
		}
	}
	return a
}

// stop stops a's reconcilers, as an agent that exits does; the kernel
// state stays.
func (a *Agent) stop() { a.recs.Load().Stop(context.Background()) }

func defaultTestPeriods() map[string]reconcile.Periods { return defaultPeriods() }

// A node switches from the legacy datapath to the eBPF one (a new agent
// runs Init over what the legacy one left) and back (the legacy datapath
// programs its routes and rule, then Cleanup removes the eBPF datapath):
// established connections between pods, in both directions, carry on
// across both switches, and masquerading never stops.
func TestPrivilegedSwitchDatapath(t *testing.T) {
	k := requirePrivileged(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("iptables is not installed: the legacy datapath needs it")
	}
	bpffs := privateBPFFS(t)
	l := newLab(t)
	pinDir := filepath.Join(bpffs, "node1")
	legacyModes := modes(t, nil, k)
	bpfModes := modes(t, map[string]string{config.KeyKubeProxyReplacement: "true", config.KeyBPFMasquerade: "true"}, k)
	if legacyModes.Datapath != config.DatapathLegacy || bpfModes.Datapath != config.DatapathBPF || bpfModes.HostRouting.Mode != config.HostRoutingBPF {
		t.Fatalf("decided %s and %s (%s host routing)", legacyModes.Datapath, bpfModes.Datapath, bpfModes.HostRouting.Mode)
	}
	masqRulesErr := func() (int, error) {
		var rules []string
		err := l.node.Do(func(ns.NetNS) error {
			var err error
			rules, err = linux.MasqueradeRules()
			return err
		})
		return len(rules), err
	}
	masqRules := func() int {
		t.Helper()
		n, err := masqRulesErr()
		must(t, err)
		return n
	}
	// masquerades checks a new connection to the outside is masqueraded.
	masquerades := func(t *testing.T) {
		t.Helper()
		c := dial(t, l.pod1, "198.18.0.254:9000")
		if got := c.roundTrip(t, "out"); !strings.HasPrefix(got, "198.18.0.11:") {
			t.Errorf("outside saw %s, want the node's address", got)
		}
	}

	// 1. legacy datapath, established connections both ways.
	first := runAgent(t, l, legacyModes, k, pinDir, defaultTestPeriods())
	c12 := dial(t, l.pod1, "198.19.1.20:8080")
	c21 := dial(t, l.pod2, "198.19.1.10:8080")
	roundTrips := func(t *testing.T, msg string) {
		t.Helper()
		if got := c12.roundTrip(t, msg); !strings.HasPrefix(got, "198.19.1.10:") {
			t.Errorf("pod 2 saw %s, want pod 1's address", got)
		}
		if got := c21.roundTrip(t, msg); !strings.HasPrefix(got, "198.19.1.20:") {
			t.Errorf("pod 1 saw %s, want pod 2's address", got)
		}
	}
	roundTrips(t, "legacy")
	masquerades(t)
	// A masqueraded connection whose port iptables kept: BPF masquerade
	// keeps ports in its range too, so the flow keeps its tuple across
	// the switch. (One from a port below the NAT range would be given
	// another port by BPF masquerade and break: see the report.)
	var masqConn *client
	must(t, l.pod1.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{Port: 55000}}
		c, err := d.Dial("tcp4", "198.18.0.254:9000")
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		masqConn = &client{c, bufio.NewReader(c)}
		return nil
	}))
	if got := masqConn.roundTrip(t, "masq-legacy"); got != "198.18.0.11:55000" {
		t.Fatalf("outside saw %s, want 198.18.0.11:55000 (iptables keeps the port)", got)
	}
	if masqRules() == 0 {
		t.Fatal("the legacy datapath installed no masquerade rule")
	}
	first.stop()

	// 2. the eBPF datapath takes over.
	second := runAgent(t, l, bpfModes, k, pinDir, defaultTestPeriods())
	t.Run("legacy to bpf", func(t *testing.T) {
		roundTrips(t, "bpf")
		if got := masqConn.roundTrip(t, "masq-bpf"); got != "198.18.0.11:55000" {
			t.Errorf("outside saw the established masqueraded connection from %s after the switch, want 198.18.0.11:55000", got)
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, maps.NameMetrics), &ebpf.LoadPinOptions{ReadOnly: true})
		must(t, err)
		defer m.Close()
		rows, err := maps.NewMetrics(m).List()
		must(t, err)
		redirected := false
		for _, r := range rows {
			redirected = redirected || (r.Reason == maps.MetricRedirect && r.Packets > 0)
		}
		if !redirected {
			t.Errorf("the established connections did not go through the programs: %v", rows)
		}
		// The masquerade reconciler prunes the rule once its table is
		// initialised: in its first rounds.
		// (A listing that races the removal may fail: iptables-nft then
		// sees the chain half gone.)
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			n, err := masqRulesErr()
			if n == 0 && err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("iptables masquerade chain still has %d rules with BPF masquerade (%v)", n, err)
			}
		}
		masquerades(t)
		var high int
		must(t, l.node.Do(func(ns.NetNS) error {
			var err error
			_, high, err = bpfdp.PortRange()
			return err
		}))
		if high != bpfdp.NATPortMin-1 {
			t.Errorf("node's ephemeral ports end at %d, want %d (below the NAT ports)", high, bpfdp.NATPortMin-1)
		}
	})
	second.stop()

	// 3. and back: legacy routes and rule first, then the eBPF datapath goes.
	runAgent(t, l, legacyModes, k, pinDir, defaultTestPeriods())
	must(t, l.node.Do(func(ns.NetNS) error { return bpfdp.Cleanup(discard(), pinDir, "", "eth0") }))
	t.Run("bpf to legacy", func(t *testing.T) {
		roundTrips(t, "legacy-again")
		masquerades(t)
		if masqRules() == 0 {
			t.Error("no masquerade rule after switching back")
		}
		for _, ifname := range []string{"eth0", "gl1", "gl2"} {
			if n := attachedPrograms(t, l.node, ifname); n != 0 {
				t.Errorf("%d programs still attached to %s", n, ifname)
			}
		}
		if _, err := os.Stat(pinDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pins left under %s: %v", pinDir, err)
		}
		var low, high int
		must(t, l.node.Do(func(ns.NetNS) error {
			var err error
			low, high, err = bpfdp.PortRange()
			return err
		}))
		if high != 60999 {
			t.Errorf("ip_local_port_range %d-%d after cleanup, want the kernel's default top 60999 back", low, high)
		}
	})
	t.Run("cleanup is idempotent", func(t *testing.T) {
		must(t, l.node.Do(func(ns.NetNS) error { return bpfdp.Cleanup(discard(), pinDir, "", "eth0") }))
		roundTrips(t, "still")
	})
}

// attachedPrograms counts the tcx programs on both hooks of ifname in n.
func attachedPrograms(t *testing.T, n ns.NetNS, ifname string) int {
	t.Helper()
	count := 0
	must(t, n.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifname)
		if err != nil {
			return err
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
			if err != nil {
				return err
			}
			count += len(res.Programs)
		}
		return nil
	}))
	return count
}

// While the agent's reconcilers run, a pod's route, its endpoint map
// entry and a service map entry are deleted behind their back (in the
// node namespace the test made): each is restored within the refresh
// period, and every repair is counted in glia_reconcile_repairs_total.
func TestPrivilegedDriftRepaired(t *testing.T) {
	k := requirePrivileged(t)
	bpffs := privateBPFFS(t)
	l := newLab(t)
	pinDir := filepath.Join(bpffs, "node1")
	const refresh = 500 * time.Millisecond
	periods := defaultPeriods()
	for name, p := range periods {
		p.Refresh, p.Prune = refresh, refresh
		if name == datapath.ReconcilerServices {
			p.Refresh = 0 // services are re-checked by the prune's read-back
		}
		periods[name] = p
	}
	echo := &state.Service{Name: state.ServiceName{Namespace: "default", Name: "echo"}, Frontends: []state.Frontend{{
		PortName: "http", Protocol: "TCP", Addr: netip.MustParseAddrPort("198.18.128.10:80"),
		Backends: []state.Backend{{Addr: netip.MustParseAddrPort("198.19.1.20:8080"), Ready: true}}}}}
	m := modes(t, map[string]string{config.KeyKubeProxyReplacement: "true", config.KeyBPFMasquerade: "true"}, k)
	// Another node, routed via the gateway (auto-direct-node-routes).
	other := &state.Node{Name: "node2", IP: netip.MustParseAddr("198.18.0.254"), PodCIDR: netip.MustParsePrefix("198.19.2.0/24")}
	a := runAgentWith(t, l, m, k, pinDir, periods, []*state.Node{other}, echo)

	openMap := func(name string) *ebpf.Map {
		t.Helper()
		mp, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		must(t, err)
		t.Cleanup(func() { mp.Close() })
		return mp
	}
	eps := maps.NewEndpoints(openMap(maps.NameEndpoints))
	svcs := maps.NewServices(openMap(maps.NameServices))
	pod := netip.MustParseAddr("198.19.1.10")
	svcKey := maps.SvcKey{Addr: maps.IPv4From(netip.MustParseAddr("198.18.128.10")), Port: maps.PortFrom(80), Proto: maps.ProtoTCP}
	routeTo := func() bool {
		var found bool
		must(t, l.node.Do(func(ns.NetNS) error {
			_, ok, err := linux.RouteTo(netip.PrefixFrom(pod, 32))
			found = ok
			return err
		}))
		return found
	}
	hasEndpoint := func() bool {
		_, ok, err := eps.Lookup(pod)
		must(t, err)
		return ok
	}
	hasService := func() bool {
		_, ok, err := svcs.Lookup(svcKey)
		must(t, err)
		return ok
	}
	if !routeTo() || !hasEndpoint() || !hasService() {
		t.Fatalf("not programmed: route %t, endpoint %t, service %t", routeTo(), hasEndpoint(), hasService())
	}
	before := gauges(t, a.metrics, metrics.NameReconcileRepairs)

	// Behind the agent's back.
	must(t, l.node.Do(func(ns.NetNS) error { return linux.DeleteRouteTo(netip.PrefixFrom(pod, 32)) }))
	must(t, eps.Delete(pod))
	must(t, svcs.Delete(svcKey))
	deleted := time.Now()
	if routeTo() || hasEndpoint() || hasService() {
		t.Fatal("the deletes did not take")
	}

	// Restored within the refresh period (plus the time a round takes).
	deadline := deleted.Add(4 * refresh)
	for !(routeTo() && hasEndpoint() && hasService()) {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: route %t, endpoint %t, service %t", time.Since(deleted), routeTo(), hasEndpoint(), hasService())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("restored %s after the deletes", time.Since(deleted).Round(time.Millisecond))

	// Counted: the route and the map entry of the endpoint, the service entry.
	after := gauges(t, a.metrics, metrics.NameReconcileRepairs)
	key := func(rec string) string { return metrics.NameReconcileRepairs + "{reconciler=" + rec + "}" }
	if got := after[key("endpoints")] - before[key("endpoints")]; got != 2 {
		t.Errorf("endpoint repairs counted: %v, want 2 (route, map entry)", got)
	}
	if got := after[key("services")] - before[key("services")]; got < 1 {
		t.Errorf("service repairs counted: %v, want at least 1", got)
	}
	// Nothing else drifted: refreshes of what was not touched (the node
	// route, the sysctls, the device programs) count no repair.
	time.Sleep(2 * refresh)
	after = gauges(t, a.metrics, metrics.NameReconcileRepairs)
	for _, rec := range []string{"nodes", "sysctls", "programs", "masquerade"} {
		if got := after[key(rec)]; got != 0 {
			t.Errorf("%s repairs counted: %v, want none (nothing of theirs was touched)", rec, got)
		}
	}
	for _, r := range a.reconcilerStatus() {
		if r.Errors > 0 {
			t.Errorf("reconciler %s in error after the repair: %+v", r.Name, r)
		}
	}

	// And traffic through the repaired state works.
	c := dial(t, l.pod1, "198.18.128.10:80")
	if got := c.roundTrip(t, "repaired"); !strings.HasPrefix(got, "198.19.1.10:") {
		t.Errorf("the Service's backend saw %s, want pod 1's address", got)
	}
}
