package agent

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	bpfdp "glia.dev/glia/internal/datapath/bpf"
	"glia.dev/glia/internal/state"
)

// A node switches from the legacy datapath (kernel routing, iptables
// MASQUERADE, kube-proxy's DNAT — played here by iptables rules in
// kube-proxy's chain) to the eBPF one (BPF host routing, BPF masquerade,
// kube-proxy replacement) and back, while long-lived flows of every kind
// run through it: pod to pod on the node and across nodes, pod to
// ClusterIP (TCP and UDP), pod to the world from source ports across the
// whole range (and one whose port MASQUERADE changed), UDP to the world,
// the world to two NodePorts (a local backend, and a remote one behind
// the node's SNAT) and another node's host to a pod. Each flow sends a
// message every 50 ms and must never fail, never go unanswered for more
// than a second, and see the same answer throughout: the same translated
// source, the same backend. Flows opened under the eBPF datapath (which
// the kernel never saw) must survive the way back too. Each switch is done twice over as an agent
// killed in the middle of it would (the first attempt stops after
// Init), so the steps hold across a SIGKILL.
func TestPrivilegedSwitchKeepsFlows(t *testing.T) {
	k := requirePrivileged(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("iptables is not installed: the legacy datapath needs it")
	}
	bpffs := privateBPFFS(t)
	l := newLab(t)
	pinDir := filepath.Join(bpffs, "node1")
	legacyModes := modes(t, nil, k)
	bpfModes := modes(t, map[string]string{config.KeyKubeProxyReplacement: "true", config.KeyBPFMasquerade: "true"}, k)
	if legacyModes.Datapath != config.DatapathLegacy || bpfModes.HostRouting.Mode != config.HostRoutingBPF {
		t.Fatalf("decided %s and %s host routing", legacyModes.Datapath, bpfModes.HostRouting.Mode)
	}

	// The world, another node's host (198.18.0.12) and a pod of that
	// node (198.19.2.30) all live in the outside namespace.
	must(t, l.outside.Do(func(ns.NetNS) error {
		ext, err := netlinksafe.LinkByName("ext0")
		if err != nil {
			return err
		}
		lo, err := netlinksafe.LinkByName("lo")
		if err != nil {
			return err
		}
		for _, a := range []struct {
			l    netlink.Link
			addr string
		}{{ext, "198.18.0.12/24"}, {lo, "198.18.64.10/32"}, {lo, "198.19.2.30/32"}} {
			addr, _ := netlink.ParseAddr(a.addr)
			if err := netlink.AddrAdd(a.l, addr); err != nil {
				return fmt.Errorf("%s: %w", a.addr, err)
			}
		}
		_, pods, _ := net.ParseCIDR("198.19.1.0/24")
		return netlink.RouteAdd(&netlink.Route{Dst: pods, Gw: net.ParseIP("198.18.0.11")})
	}))
	tcpEcho(t, l.outside, "198.18.64.10:9000", "world")
	udpEcho(t, l.outside, "198.18.64.10:9053", "world")
	tcpEcho(t, l.outside, "198.19.2.30:8081", "far")
	udpEcho(t, l.outside, "198.19.2.30:5353", "far")
	tcpEcho(t, l.pod2, "198.19.1.20:8081", "pod2")
	udpEcho(t, l.pod2, "198.19.1.20:5353", "pod2")
	tcpEcho(t, l.pod1, "198.19.1.10:8081", "pod1")

	vip, vipUDP := "198.18.128.10", "198.18.128.10"
	be := func(s string) state.Backend { return state.Backend{Addr: netip.MustParseAddrPort(s), Ready: true} }
	svcs := []*state.Service{
		{Name: state.ServiceName{Namespace: "default", Name: "web"}, Frontends: []state.Frontend{{Protocol: "TCP",
			Addr: netip.MustParseAddrPort(vip + ":80"), Backends: []state.Backend{be("198.19.1.20:8081"), be("198.19.2.30:8081")}}}},
		{Name: state.ServiceName{Namespace: "default", Name: "dns"}, Frontends: []state.Frontend{{Protocol: "UDP",
			Addr: netip.MustParseAddrPort(vipUDP + ":53"), Backends: []state.Backend{be("198.19.1.20:5353"), be("198.19.2.30:5353")}}}},
		{Name: state.ServiceName{Namespace: "default", Name: "np-local"}, Frontends: []state.Frontend{{Protocol: "TCP",
			Addr: netip.MustParseAddrPort("198.18.128.11:80"), NodePort: 30080, Backends: []state.Backend{be("198.19.1.20:8081")}}}},
		{Name: state.ServiceName{Namespace: "default", Name: "np-far"}, Frontends: []state.Frontend{{Protocol: "TCP",
			Addr: netip.MustParseAddrPort("198.18.128.12:80"), NodePort: 30081, Backends: []state.Backend{be("198.19.2.30:8081")}}}},
	}
	others := []*state.Node{{Name: "node2", IP: netip.MustParseAddr("198.18.0.12"), PodCIDR: netip.MustParsePrefix("198.19.2.0/24")}}
	// kube-proxy, as its iptables mode would balance these Services
	// (one backend chosen per Service), with the masquerading of the
	// NodePort flow it sends to another node.
	kubeProxy := [][]string{
		{"-t", "nat", "-N", "KUBE-SERVICES"},
		{"-t", "nat", "-I", "PREROUTING", "-j", "KUBE-SERVICES"},
		{"-t", "nat", "-I", "OUTPUT", "-j", "KUBE-SERVICES"},
		{"-t", "nat", "-A", "KUBE-SERVICES", "-d", vip, "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", "198.19.2.30:8081"},
		{"-t", "nat", "-A", "KUBE-SERVICES", "-d", vipUDP, "-p", "udp", "--dport", "53", "-j", "DNAT", "--to-destination", "198.19.1.20:5353"},
		{"-t", "nat", "-A", "KUBE-SERVICES", "-d", "198.18.0.11", "-p", "tcp", "--dport", "30080", "-j", "DNAT", "--to-destination", "198.19.1.20:8081"},
		{"-t", "nat", "-A", "KUBE-SERVICES", "-d", "198.18.0.11", "-p", "tcp", "--dport", "30081", "-j", "DNAT", "--to-destination", "198.19.2.30:8081"},
		{"-t", "nat", "-N", "KUBE-POSTROUTING"},
		{"-t", "nat", "-I", "POSTROUTING", "-j", "KUBE-POSTROUTING"},
		{"-t", "nat", "-A", "KUBE-POSTROUTING", "-s", "198.18.64.0/18", "-d", "198.19.2.30", "-j", "MASQUERADE"},
	}
	iptables := func(args ...string) {
		t.Helper()
		must(t, l.node.Do(func(ns.NetNS) error {
			if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, out)
			}
			return nil
		}))
	}
	startKubeProxy := func() {
		for _, r := range kubeProxy {
			iptables(r...)
		}
	}
	stopKubeProxy := func() { // what kube-proxy --cleanup does
		iptables("-t", "nat", "-D", "PREROUTING", "-j", "KUBE-SERVICES")
		iptables("-t", "nat", "-D", "OUTPUT", "-j", "KUBE-SERVICES")
		iptables("-t", "nat", "-D", "POSTROUTING", "-j", "KUBE-POSTROUTING")
		for _, c := range []string{"KUBE-SERVICES", "KUBE-POSTROUTING"} {
			iptables("-t", "nat", "-F", c)
			iptables("-t", "nat", "-X", c)
		}
	}

	// 1. The legacy datapath with kube-proxy, and the flows.
	startKubeProxy()
	legacy := runAgentWith(t, l, legacyModes, k, pinDir, defaultTestPeriods(), others)
	flows := newFlowSet()
	dialTCP := func(flows *flowSet, name string, n ns.NetNS, from, to string) {
		t.Helper()
		var c net.Conn
		must(t, n.Do(func(ns.NetNS) error {
			d := net.Dialer{Timeout: 5 * time.Second}
			if from != "" {
				d.LocalAddr = net.TCPAddrFromAddrPort(netip.MustParseAddrPort(from))
			}
			var err error
			c, err = d.Dial("tcp4", to)
			return err
		}))
		flows.add(t, name, c)
	}
	dialUDP := func(flows *flowSet, name string, n ns.NetNS, from, to string) {
		t.Helper()
		var c net.Conn
		must(t, n.Do(func(ns.NetNS) error {
			var err error
			c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(from)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
			return err
		}))
		flows.add(t, name, c)
	}
	// open dials every kind of flow, the pods from ports base+...
	open := func(flows *flowSet, base int) {
		t.Helper()
		dialTCP(flows, "pod to pod, same node", l.pod1, "", "198.19.1.20:8081")
		dialTCP(flows, "pod to pod, other node", l.pod1, "", "198.19.2.30:8081")
		dialTCP(flows, "pod to ClusterIP", l.pod1, "", vip+":80")
		dialUDP(flows, "pod to ClusterIP, UDP", l.pod1, fmt.Sprintf("198.19.1.10:%d", 40100+base), vipUDP+":53")
		for _, port := range []int{20000, 33000, 40000, 45000, 52000, 60500} {
			dialTCP(flows, fmt.Sprintf("pod to world from port %d", port+base), l.pod1, fmt.Sprintf("198.19.1.10:%d", port+base), "198.18.64.10:9000")
		}
		// pod2 from the port pod1 holds towards the same server: the
		// translation gives it another.
		dialTCP(flows, "pod to world, port taken", l.pod2, fmt.Sprintf("198.19.1.20:%d", 40000+base), "198.18.64.10:9000")
		dialUDP(flows, "pod to world, UDP", l.pod1, fmt.Sprintf("198.19.1.10:%d", 40101+base), "198.18.64.10:9053")
		dialTCP(flows, "world to NodePort, local backend", l.outside, "198.18.64.10:0", "198.18.0.11:30080")
		dialTCP(flows, "world to NodePort, remote backend", l.outside, "198.18.64.10:0", "198.18.0.11:30081")
		dialTCP(flows, "other node's host to pod", l.outside, "198.18.0.12:0", "198.19.1.10:8081")
	}
	open(flows, 0)
	flows.start()
	t.Cleanup(flows.stop)
	time.Sleep(time.Second)
	if a := flows.answers("pod to world, port taken"); len(a) != 1 || strings.HasSuffix(a[0], ":40000") {
		t.Fatalf("MASQUERADE kept port 40000 of the second flow (answers %v): the test needs a changed port", a)
	}
	flows.check(t, "legacy")
	legacy.stop()

	// 2. The eBPF datapath takes over: a first agent dies after Init, a
	// second runs; then kube-proxy goes, as the lab's runner stops it.
	killed := &Agent{log: discard(), node: l.local, modes: bpfModes, cfg: Config{BPFFSDir: pinDir, Device: "eth0"}, dpStateDir: l.stateDir}
	opts := datapath.Options{Modes: bpfModes, LBAlgorithm: "random", Kernel: k, BPFFSDir: pinDir, StateDir: l.stateDir, MTU: 1500}
	var err error
	killed.dp, err = newDatapath(discard(), l.local, opts)
	must(t, err)
	must(t, l.node.Do(func(ns.NetNS) error { _, err := killed.initDatapath(t.Context()); return err }))
	must(t, killed.dp.Close())
	bpf := runAgentWith(t, l, bpfModes, k, pinDir, defaultTestPeriods(), others, svcs...)
	stopKubeProxy()
	time.Sleep(2 * time.Second)
	flows.check(t, "legacy to BPF")
	// Flows the eBPF datapath opened, which the kernel never saw.
	bpfFlows := newFlowSet()
	open(bpfFlows, 1000)
	bpfFlows.start()
	t.Cleanup(bpfFlows.stop)
	time.Sleep(time.Second)
	bpfFlows.check(t, "BPF")
	bpf.stop()

	// 3. And back: a legacy agent dies after Init, another programs the
	// node; kube-proxy comes back; the eBPF datapath goes.
	killedLegacy := &Agent{log: discard(), node: l.local, modes: legacyModes, cfg: Config{BPFFSDir: pinDir, Device: "eth0"}, dpStateDir: l.stateDir}
	killedLegacy.dp, err = newDatapath(discard(), l.local, datapath.Options{Modes: legacyModes, Kernel: k, BPFFSDir: pinDir, StateDir: l.stateDir, MTU: 1500})
	must(t, err)
	must(t, l.node.Do(func(ns.NetNS) error { _, err := killedLegacy.initDatapath(t.Context()); return err }))
	back := runAgentWith(t, l, legacyModes, k, pinDir, defaultTestPeriods(), others)
	startKubeProxy()
	must(t, l.node.Do(func(ns.NetNS) error { back.leaveBPF(t.Context()); return nil }))
	if n := attachedPrograms(t, l.node, "eth0"); n != 0 {
		t.Errorf("%d programs still on eth0 after the switch back", n)
	}
	time.Sleep(2 * time.Second)
	flows.check(t, "BPF to legacy")
	bpfFlows.check(t, "BPF to legacy (flows opened under BPF)")
	owners, err := bpfdp.ReadOwners(l.stateDir)
	must(t, err)
	if owners != (bpfdp.Owners{Masquerade: bpfdp.OwnerKernel, Services: bpfdp.OwnerKernel}) {
		t.Errorf("handover record after the switch back: %+v, want the kernel's on both counts", owners)
	}
	for _, f := range append(flows.list, bpfFlows.list...) {
		t.Logf("%-45s %5d round trips, longest wait %4s, answered %q", f.name, f.n, f.maxGap.Round(time.Millisecond), f.first)
	}
}

// tcpEcho accepts in n on addr and answers each line with "name
// client-address".
func tcpEcho(t *testing.T, n ns.NetNS, addr, name string) {
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
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
				}
			}()
		}
	}()
}

// udpEcho answers each datagram in n on addr with "name client-address".
func udpEcho(t *testing.T, n ns.NetNS, addr, name string) {
	t.Helper()
	var pc net.PacketConn
	must(t, n.Do(func(ns.NetNS) error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}))
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(fmt.Appendf(nil, "%s %s\n", name, from), from)
		}
	}()
}

// flowSet runs one message every 50 ms on each of its long-lived flows
// and records what happens.
type flowSet struct {
	list []*flow
	stop func()
	wg   sync.WaitGroup
}

type flow struct {
	name string
	c    net.Conn
	r    *bufio.Reader

	mu     sync.Mutex
	n      int
	first  string
	other  []string // answers other than the first
	errs   []string
	lastOK time.Time
	maxGap time.Duration
}

func newFlowSet() *flowSet { return &flowSet{stop: func() {}} }

func (s *flowSet) add(t *testing.T, name string, c net.Conn) {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	s.list = append(s.list, &flow{name: name, c: c, r: bufio.NewReader(c)})
}

func (s *flowSet) start() {
	done := make(chan struct{})
	for _, f := range s.list {
		f.lastOK = time.Now()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
				}
				f.once()
			}
		}()
	}
	var once sync.Once
	s.stop = func() { once.Do(func() { close(done); s.wg.Wait() }) }
}

// once is one message and its answer. A UDP datagram lost is retried
// (the gap shows it); a TCP error ends the flow.
func (f *flow) once() {
	f.mu.Lock()
	dead := len(f.errs) > 0 && f.c.LocalAddr().Network() == "tcp"
	f.mu.Unlock()
	if dead {
		return
	}
	f.c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	_, err := fmt.Fprintf(f.c, "m\n")
	var line string
	if err == nil {
		line, err = f.r.ReadString('\n')
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if gap := now.Sub(f.lastOK); gap > f.maxGap {
		f.maxGap = gap
	}
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() && f.c.LocalAddr().Network() == "udp" {
			return // a datagram lost: the gap counts it
		}
		f.errs = append(f.errs, fmt.Sprintf("%s: %v", now.Format("15:04:05.000"), err))
		return
	}
	f.n++
	f.lastOK = now
	line = strings.TrimSpace(line)
	switch {
	case f.first == "":
		f.first = line
	case line != f.first && len(f.other) < 5:
		f.other = append(f.other, now.Format("15:04:05.000")+" "+line)
	}
}

// answers is what a flow's far side answered, distinct.
func (s *flowSet) answers(name string) []string {
	for _, f := range s.list {
		if f.name == name {
			f.mu.Lock()
			defer f.mu.Unlock()
			return append([]string{f.first}, f.other...)
		}
	}
	return nil
}

// check fails the test for every flow that failed, went unanswered for
// more than a second or changed its answer, so far.
func (s *flowSet) check(t *testing.T, phase string) {
	t.Helper()
	for _, f := range s.list {
		f.mu.Lock()
		gap := f.maxGap
		if cur := time.Since(f.lastOK); cur > gap {
			gap = cur
		}
		switch {
		case len(f.errs) > 0:
			t.Errorf("%s: %s: interrupted: %s", phase, f.name, strings.Join(f.errs, "; "))
		case f.n == 0:
			t.Errorf("%s: %s: never answered", phase, f.name)
		case gap > time.Second:
			t.Errorf("%s: %s: no answer for %s", phase, f.name, gap.Round(time.Millisecond))
		case len(f.other) > 0:
			t.Errorf("%s: %s: answered %q, then %v (another backend or another translated source)", phase, f.name, f.first, f.other)
		}
		f.mu.Unlock()
	}
}
