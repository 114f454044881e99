package bpf

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/maps"
)

var testNet = handoverNet{
	nodeIP:      netip.MustParseAddr(nodeIP),
	podCIDR:     netip.MustParsePrefix("198.19.1.0/24"),
	clusterCIDR: netip.MustParsePrefix("198.19.0.0/16"),
}

func app(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func kflow(proto uint8, origSrc, origDst, replySrc, replyDst string) linux.CTFlow {
	return linux.CTFlow{Proto: proto, Orig: linux.Tuple{Src: app(origSrc), Dst: app(origDst)},
		Reply: linux.Tuple{Src: app(replySrc), Dst: app(replyDst)}, TCPState: nl.TCP_CONNTRACK_ESTABLISHED}
}

// The kernel's flows a takeover copies, and those it leaves: masqueraded
// flows of local pods (any port), flows outside hosts opened to local
// pods, and Service flows glia's load balancer can carry on.
func TestHandoverSeedsFromKernelFlows(t *testing.T) {
	const now = 1000
	flows := []linux.CTFlow{
		kflow(maps.ProtoTCP, "198.19.1.10:32001", "198.18.64.10:80", "198.18.64.10:80", "198.18.0.11:32001"),   // masq, port kept
		kflow(maps.ProtoUDP, "198.19.1.10:40000", "198.18.64.10:53", "198.18.64.10:53", "198.18.0.11:1024"),    // masq, port changed
		kflow(maps.ProtoTCP, "198.19.2.10:40000", "198.18.64.10:80", "198.18.64.10:80", "198.18.0.12:40000"),   // another node's pod
		kflow(maps.ProtoTCP, "198.19.1.10:40002", "198.19.2.30:80", "198.19.2.30:80", "198.19.1.10:40002"),     // pod to pod
		kflow(maps.ProtoTCP, "198.18.0.12:45000", "198.19.1.20:8080", "198.19.1.20:8080", "198.18.0.12:45000"), // host -> pod
		kflow(maps.ProtoTCP, "198.19.1.10:40003", vip+":80", "198.19.2.30:8080", "198.19.1.10:40003"),          // pod -> ClusterIP
		kflow(maps.ProtoTCP, world+":5000", nodeIP+":30080", "198.19.2.30:8080", "198.18.0.11:61000"),          // NodePort, remote backend
		kflow(maps.ProtoTCP, world+":5001", nodeIP+":30080", "198.19.1.20:8080", world+":5001"),                // NodePort, local backend
		kflow(maps.ProtoTCP, world+":5002", nodeIP+":30080", "198.19.1.20:8080", "198.18.0.11:62000"),          // NodePort SNATed to a local backend
	}
	closing := kflow(maps.ProtoTCP, "198.19.1.10:40009", "198.18.64.10:80", "198.18.64.10:80", "198.18.0.11:40009")
	closing.TCPState = nl.TCP_CONNTRACK_TIME_WAIT
	flows = append(flows, closing)

	var masq []string
	for _, p := range masqueradeSeeds(flows, testNet, now) {
		for _, r := range []maps.NATRow{p.egress, p.ingress} {
			masq = append(masq, strings.Join(strings.Fields(r.String()), " "))
		}
	}
	wantMasq := []string{
		"OUT TCP 198.19.1.10:32001 -> 198.18.64.10:80 => 198.18.0.11:32001",
		"IN TCP 198.18.64.10:80 -> 198.18.0.11:32001 => 198.19.1.10:32001",
		"OUT UDP 198.19.1.10:40000 -> 198.18.64.10:53 => 198.18.0.11:1024",
		"IN UDP 198.18.64.10:53 -> 198.18.0.11:1024 => 198.19.1.10:40000",
	}
	if d := cmp.Diff(wantMasq, masq); d != "" {
		t.Errorf("masquerade seeds (-want +got):\n%s", d)
	}
	in := inboundSeeds(flows, testNet, now)
	if len(in) != 1 || in[0].Key != tupleOf(app("198.19.1.20:8080"), app("198.18.0.12:45000"), maps.ProtoTCP, dirCTInbound) {
		t.Errorf("inbound seeds %v, want the host -> pod flow keyed in the pod's direction", in)
	}
	svcs, skipped := serviceSeeds(flows, testNet)
	if skipped != 1 {
		t.Errorf("%d service flows counted as not expressible, want 1 (the NodePort flow SNATed to a local backend)", skipped)
	}
	cip := maps.SvcKey{Addr: maps.IPv4From(netip.MustParseAddr(vip)), Port: maps.PortFrom(80), Proto: maps.ProtoTCP, Scope: maps.ScopeClusterIP}
	np := maps.SvcKey{Port: maps.PortFrom(30080), Proto: maps.ProtoTCP, Scope: maps.ScopeNodePort}
	want := map[maps.SvcKey][]svcSeed{
		cip: {{proto: maps.ProtoTCP, client: app("198.19.1.10:40003"), frontend: app(vip + ":80"), backend: app("198.19.2.30:8080")}},
		np: {
			{proto: maps.ProtoTCP, client: app(world + ":5000"), frontend: app(nodeIP + ":30080"), backend: app("198.19.2.30:8080"), nodePort: true, snat: app(nodeIP + ":61000")},
			{proto: maps.ProtoTCP, client: app(world + ":5001"), frontend: app(nodeIP + ":30080"), backend: app("198.19.1.20:8080"), nodePort: true},
		},
	}
	if d := cmp.Diff(want, svcs, cmp.AllowUnexported(svcSeed{}), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); d != "" {
		t.Errorf("service seeds (-want +got):\n%s", d)
	}
}

// The other way: the live flows of glia's maps become kernel flows with
// glia's translation; expired and closing ones do not.
func TestHandoverKernelFlowsFromMaps(t *testing.T) {
	now := uint64(10 * time.Hour)
	est := uint16(maps.CTFlagTracked | maps.CTFlagSeenNonSyn | maps.CTFlagSeenReply)
	nat := []maps.NATRow{
		newNATPair(maps.ProtoTCP, app("198.19.1.10:50000"), app("198.18.64.10:80"), app("198.18.0.11:50000"), now).egress,
		newNATPair(maps.ProtoTCP, app("198.19.1.10:40000"), app("198.18.64.10:80"), app("198.18.0.11:51000"), now).egress,
		newNATPair(maps.ProtoUDP, app("198.19.1.10:40000"), app("198.18.64.10:53"), app("198.18.0.11:52000"), now-uint64(2*time.Minute)).egress, // expired
		newNATPair(maps.ProtoTCP, app(world+":5000"), app("198.19.2.30:8080"), app("198.18.0.11:53000"), now).egress,                            // NodePort SNAT
	}
	ct := []maps.CTRow{
		{Key: tupleOf(app("198.19.1.20:8080"), app("198.18.0.12:45000"), maps.ProtoTCP, dirCTInbound), Entry: maps.CTEntry{LastSeen: now, Flags: est}},
		{Key: tupleOf(app("198.19.1.10:40003"), app(vip+":80"), maps.ProtoTCP, maps.DirCTService), Entry: maps.CTEntry{LastSeen: now, BackendID: 7, SvcID: 1, Flags: est}},
		{Key: tupleOf(app(world+":5000"), app(nodeIP+":30080"), maps.ProtoTCP, maps.DirCTService), Entry: maps.CTEntry{LastSeen: now, BackendID: 7, SvcID: 2, Flags: est | ctFlagNodePort}},
		{Key: tupleOf(app("198.19.1.10:40004"), app(vip+":80"), maps.ProtoTCP, maps.DirCTService), Entry: maps.CTEntry{LastSeen: now, BackendID: 7, SvcID: 1, Flags: est | maps.CTFlagTxClosing}},
		{Key: tupleOf(app("198.19.1.10:40005"), app(vip+":80"), maps.ProtoTCP, maps.DirCTService), Entry: maps.CTEntry{LastSeen: now, BackendID: 99, SvcID: 1, Flags: est}},
	}
	backends := map[uint32]maps.Backend{7: {Addr: maps.IPv4From(netip.MustParseAddr("198.19.2.30")), Port: maps.PortFrom(8080), Proto: maps.ProtoTCP}}
	for _, tc := range []struct {
		name string
		what handBackWhat
		want []string
	}{
		{"masquerade", handBackWhat{masquerade: true}, []string{
			"tcp 198.18.0.12:45000 -> 198.19.1.20:8080 (reply 198.19.1.20:8080 -> 198.18.0.12:45000)",
			"tcp 198.19.1.10:40000 -> 198.18.64.10:80 (reply 198.18.64.10:80 -> 198.18.0.11:51000)",
			"tcp 198.19.1.10:50000 -> 198.18.64.10:80 (reply 198.18.64.10:80 -> 198.18.0.11:50000)",
		}},
		{"services", handBackWhat{services: true}, []string{
			"tcp 198.18.64.10:5000 -> 198.18.0.11:30080 (reply 198.19.2.30:8080 -> 198.18.0.11:53000)",
			"tcp 198.19.1.10:40003 -> 198.18.128.10:80 (reply 198.19.2.30:8080 -> 198.19.1.10:40003)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st HandoverStats
			var got []string
			for _, f := range kernelFlows(ct, nat, backends, testNet, now, tc.what, &st) {
				if f.Timeout == 0 {
					t.Errorf("%s: no timeout", f)
				}
				got = append(got, f.String())
			}
			slices.Sort(got)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("kernel flows (-want +got):\n%s", d)
			}
		})
	}
}

// A TCP flow met mid-way keeps its port whatever it is (a SYN does not,
// below the NAT range); UDP cannot tell a new flow from an old one.
func TestMasqueradeMidFlowKeepsPort(t *testing.T) {
	e := newEnv(t, FlagMasquerade|FlagKPR|FlagHostRouting, false)
	for i, tc := range []struct {
		name  string
		pkt   func(dport uint16) []byte
		sport uint16
		kept  bool
	}{
		{"SYN below the range", func(d uint16) []byte { return tcpPkt(podA, world, 40000, d, tcpSYN) }, 40000, false},
		{"ACK below the range", func(d uint16) []byte { return tcpPkt(podA, world, 40000, d, tcpACK) }, 40000, true},
		{"ACK at the bottom", func(d uint16) []byte { return tcpPkt(podA, world, 1024, d, tcpACK) }, 1024, true},
		{"ACK above", func(d uint16) []byte { return tcpPkt(podA, world, 50000, d, tcpACK) }, 50000, true},
		{"UDP below the range", func(d uint16) []byte { return udpPkt(podA, world, 40000, d) }, 40000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dport := uint16(9000 + i)
			ret, f, _ := e.run(e.o.ToNetdev, tc.pkt(dport))
			if ret != tcOK || f.Src != nodeIP {
				t.Fatalf("verdict %d, %+v", ret, f)
			}
			if kept := f.SPort == tc.sport; kept != tc.kept {
				t.Errorf("port %d translated to %d: kept=%v, want %v", tc.sport, f.SPort, kept, tc.kept)
			}
			if !tc.kept && f.SPort < NATPortMin {
				t.Errorf("new port %d below the NAT range", f.SPort)
			}
		})
	}
}

// A mid-flow packet does not get the port of a connection the node holds
// towards the same peer.
func TestPrivilegedMasqueradeMidFlowAvoidsNodeSockets(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, FlagMasquerade|FlagKPR|FlagHostRouting, false)
	n := newNS(t)
	must(t, n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		for _, a := range []string{nodeIP + "/32", world + "/32"} {
			addr, _ := netlink.ParseAddr(a)
			if err := netlink.AddrAdd(lo, addr); err != nil {
				return err
			}
		}
		ln, err := net.Listen("tcp4", world+":80")
		if err != nil {
			return err
		}
		defer ln.Close()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(nodeIP), Port: 40000}}
		c, err := d.Dial("tcp4", world+":80")
		if err != nil {
			return err
		}
		defer c.Close()
		_, f, _ := e.run(e.o.ToNetdev, tcpPkt(podA, world, 40000, 80, tcpACK))
		if f.SPort == 40000 || f.SPort < NATPortMin {
			t.Errorf("pod's mid-flow packet got port %d, held by the node's connection; want a new one from %d", f.SPort, NATPortMin)
		}
		// towards another port of the peer, 40000 is free
		_, f, _ = e.run(e.o.ToNetdev, tcpPkt(podA, world, 40000, 81, tcpACK))
		if f.SPort != 40000 {
			t.Errorf("towards another peer port: %d, want 40000 kept", f.SPort)
		}
		return nil
	}))
}

// Where iptables masquerades, the programs continue a flow glia translated
// before the switch and create no translation.
func TestSNATContinue(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	p := newNATPair(maps.ProtoTCP, app(podA+":40000"), app(world+":80"), app(nodeIP+":51000"), maps.Monotonic())
	for _, r := range []maps.NATRow{p.egress, p.ingress} {
		must(t, e.nat.Update(r.Key, r.Entry))
	}
	ret, f, _ := e.run(e.o.ToNetdev, tcpPkt(podA, world, 40000, 80, tcpACK))
	check(t, "handed-over flow", ret, tcOK, f, flow{Src: nodeIP, Dst: world, SPort: 51000, DPort: 80, Proto: protoTCP, TCPFlags: tcpACK})
	ret, f, _ = e.run(e.o.ToNetdev, tcpPkt(podA, world, 40001, 80, tcpSYN))
	check(t, "new flow", ret, tcOK, f, flow{Src: podA, Dst: world, SPort: 40001, DPort: 80, Proto: protoTCP, TCPFlags: tcpSYN})
	if _, ok := e.natEntry(tuple(podA, world, 40001, 80, maps.ProtoTCP, maps.DirNATEgress)); ok {
		t.Error("a translation was created for a new flow")
	}
}

// A takeover seeds the maps so that the programs continue the kernel's
// translations: the masqueraded flow keeps the kernel's port both ways,
// the Service flow the kernel's backend (of three), with the client's
// affinity, and the inbound flow's replies are not masqueraded.
func TestHandoverTakeOverPrograms(t *testing.T) {
	e := newEnv(t, FlagMasquerade|FlagKPR|FlagHostRouting, false)
	flows := []linux.CTFlow{
		kflow(maps.ProtoTCP, podA+":40000", world+":80", world+":80", nodeIP+":1024"),
		kflow(maps.ProtoUDP, podA+":40001", world+":53", world+":53", nodeIP+":40001"),
		kflow(maps.ProtoTCP, "198.18.0.12:45000", podLocal+":8080", podLocal+":8080", "198.18.0.12:45000"),
		kflow(maps.ProtoTCP, podA+":40002", vip+":80", "198.19.2.32:8080", podA+":40002"),
		kflow(maps.ProtoUDP, podA+":40003", vip+":53", "198.19.2.33:5353", podA+":40003"),
	}
	st, err := takeOverMasquerade(flows, testNet, e.ct, e.nat)
	must(t, err)
	if st.Masqueraded != 2 || st.Inbound != 1 {
		t.Errorf("took over %+v, want 2 masqueraded and 1 inbound flow", st)
	}
	// again: idempotent
	if st, err := takeOverMasquerade(flows, testNet, e.ct, e.nat); err != nil || st.total() != 0 || st.Existing != 3 {
		t.Errorf("second takeover: %+v, %v; want nothing new, 3 already there", st, err)
	}
	seeds, _ := serviceSeeds(flows, testNet)
	var hooked []maps.SvcKey
	e.lb.newFrontend = func(k maps.SvcKey, val maps.SvcValue) {
		hooked = append(hooked, k)
		id := func(a netip.AddrPort, proto uint8) (uint32, bool) {
			b, ok := e.lb.bes[backendKey{addr: maps.IPv4From(a.Addr()), port: maps.PortFrom(a.Port()), proto: proto}]
			return b.id, ok
		}
		if _, err := takeOverServiceFlows(seeds[k], val, id, e.ct, e.nat, e.lb.affinity); err != nil {
			t.Error(err)
		}
	}
	web := svc("TCP", vip+":80", 0, "198.19.2.31:8080", "198.19.2.32:8080", "198.19.2.34:8080")
	web.SessionAffinity = true
	dns := svc("UDP", vip+":53", 0, "198.19.2.33:5353", "198.19.2.35:5353")
	dns.Name = "dns"
	e.services(web, dns)
	if len(hooked) != 2 {
		t.Errorf("the takeover hook saw %v, want both frontends", hooked)
	}

	for i := range 20 {
		_, f, _ := e.run(e.o.ToNetdev, tcpPkt(podA, world, 40000, 80, tcpACK))
		if f.Src != nodeIP || f.SPort != 1024 {
			t.Fatalf("packet %d of the masqueraded flow left as %s:%d, want %s:1024", i, f.Src, f.SPort, nodeIP)
		}
		_, f, _ = e.run(e.o.FromContainer, tcpPkt(podA, vip, 40002, 80, tcpACK))
		if f.Dst != "198.19.2.32" {
			t.Fatalf("packet %d of the Service flow went to %s, want the kernel's backend 198.19.2.32", i, f.Dst)
		}
		_, f, _ = e.run(e.o.FromContainer, udpPkt(podA, vip, 40003, 53))
		if f.Dst != "198.19.2.33" || f.DPort != 5353 {
			t.Fatalf("datagram %d of the UDP Service flow went to %s:%d, want the kernel's backend 198.19.2.33:5353", i, f.Dst, f.DPort)
		}
	}
	_, f, _ := e.run(e.o.ToNetdev, udpPkt(podA, world, 40001, 53))
	if f.SPort != 40001 {
		t.Errorf("UDP flow left from port %d, want the kernel's 40001", f.SPort)
	}
	ret, f, _ := e.run(e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 1024, tcpACK))
	check(t, "reply of the masqueraded flow", ret, tcOK, f, flow{Src: world, Dst: podA, SPort: 80, DPort: 40000, Proto: protoTCP, TCPFlags: tcpACK})
	ret, f, _ = e.run(e.o.FromContainer, tcpPkt("198.19.2.32", podA, 8080, 40002, tcpACK))
	if f.Src != vip || f.SPort != 80 {
		t.Errorf("reply of the Service flow from %s:%d (verdict %d), want the frontend %s:80", f.Src, f.SPort, ret, vip)
	}
	_, f, _ = e.run(e.o.ToNetdev, tcpPkt(podLocal, "198.18.0.12", 8080, 45000, tcpACK))
	if f.Src != podLocal {
		t.Errorf("reply of the inbound flow left as %s, want the pod's own address", f.Src)
	}
	// new connections of the client keep the backend (affinity)
	for port := uint16(40010); port < 40016; port++ {
		_, f, _ = e.run(e.o.FromContainer, tcpPkt(podA, vip, port, 80, tcpSYN))
		if f.Dst != "198.19.2.32" {
			t.Errorf("the client's new connection from %d went to %s, want its affine backend 198.19.2.32", port, f.Dst)
		}
	}
}

// Back and forth in the kernel: a handback writes kernel entries that
// translate as glia did, and is idempotent.
func TestPrivilegedHandBackWritesKernel(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, FlagMasquerade|FlagKPR|FlagHostRouting, false)
	e.services(svc("TCP", vip+":80", 0, "198.19.2.31:8080"))
	// flows as the programs make them
	e.run(e.o.ToNetdev, tcpPkt(podA, world, 40000, 80, tcpSYN))
	e.run(e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 0, tcpSYN|tcpACK)) // not a reply of ours: ignored
	_, out, _ := e.run(e.o.ToNetdev, tcpPkt(podA, world, 40000, 80, tcpACK))
	e.run(e.o.FromNetdev, tcpPkt(world, nodeIP, 80, out.SPort, tcpACK))
	e.run(e.o.FromContainer, tcpPkt(podA, vip, 40002, 80, tcpSYN))
	e.run(e.o.FromContainer, tcpPkt("198.19.2.31", podA, 8080, 40002, tcpSYN|tcpACK))
	e.run(e.o.FromContainer, tcpPkt(podA, vip, 40002, 80, tcpACK))
	n := newNS(t)
	must(t, n.Do(func(ns.NetNS) error {
		st, err := handBack(e.ct, e.nat, maps.NewBackends(e.o.Maps[maps.NameBackends]), testNet, handBackWhat{masquerade: true, services: true})
		if err != nil {
			return err
		}
		if st.Masqueraded != 1 || st.Services != 1 {
			t.Errorf("handed back %+v, want 1 masqueraded and 1 Service flow", st)
		}
		got, err := linux.ConntrackList()
		if err != nil {
			return err
		}
		want := map[string]bool{
			linux.CTFlow{Proto: unix.IPPROTO_TCP, Orig: linux.Tuple{Src: app(podA + ":40000"), Dst: app(world + ":80")},
				Reply: linux.Tuple{Src: app(world + ":80"), Dst: netip.AddrPortFrom(testNet.nodeIP, out.SPort)}}.String(): true,
			linux.CTFlow{Proto: unix.IPPROTO_TCP, Orig: linux.Tuple{Src: app(podA + ":40002"), Dst: app(vip + ":80")},
				Reply: linux.Tuple{Src: app("198.19.2.31:8080"), Dst: app(podA + ":40002")}}.String(): true,
		}
		for _, f := range got {
			if !want[f.String()] {
				t.Errorf("unexpected kernel entry %s", f)
			}
			delete(want, f.String())
		}
		for f := range want {
			t.Errorf("missing kernel entry %s", f)
		}
		st, err = handBack(e.ct, e.nat, maps.NewBackends(e.o.Maps[maps.NameBackends]), testNet, handBackWhat{masquerade: true, services: true})
		if st.Existing != 2 || st.Conflicts != 0 {
			t.Errorf("second handback: %+v, want both already there", st)
		}
		return err
	}))
}
