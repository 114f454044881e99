package bpf

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/maps"
)

// Connection tracking across the life of a flow: a TCP flow is over after
// FIN or RST (a short closing lifetime), every entry expires, and a new
// connection that reuses the 4-tuple of a finished one must not inherit
// its translation. Expiry is simulated by moving an entry's last-seen
// time into the past, never by sleeping.

const tcpFIN = 0x01

const (
	vip2    = "198.18.128.11"
	podFar2 = "198.19.2.31"
)

// monoNow is CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
func monoNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// ageCT makes every CT entry look last seen d ago.
func (e *env) ageCT(d time.Duration) {
	e.t.Helper()
	rows, err := e.ct.List()
	if err != nil {
		e.t.Fatal(err)
	}
	past := monoNow(e.t) - uint64(d) // wraps on young machines, as the datapath's arithmetic does
	for _, r := range rows {
		r.Entry.LastSeen = past
		if err := e.ct.Update(r.Key, r.Entry); err != nil {
			e.t.Fatal(err)
		}
	}
}

// ageNAT makes every NAT entry matching keep look last seen d ago.
func (e *env) ageNAT(d time.Duration, keep func(maps.NATRow) bool) {
	e.t.Helper()
	rows, err := e.nat.List()
	if err != nil {
		e.t.Fatal(err)
	}
	past := monoNow(e.t) - uint64(d)
	for _, r := range rows {
		if !keep(r) {
			continue
		}
		r.Entry.LastSeen = past
		if err := e.nat.Update(r.Key, r.Entry); err != nil {
			e.t.Fatal(err)
		}
	}
}

func tuple(src, dst string, sport, dport uint16, proto, dir uint8) maps.Tuple {
	return maps.Tuple{SAddr: maps.IPv4From(netip.MustParseAddr(src)), DAddr: maps.IPv4From(netip.MustParseAddr(dst)),
		SPort: maps.PortFrom(sport), DPort: maps.PortFrom(dport), Proto: proto, Dir: dir}
}

func (e *env) ctEntry(k maps.Tuple) (maps.CTEntry, bool) {
	e.t.Helper()
	v, ok, err := e.ct.Lookup(k)
	if err != nil {
		e.t.Fatal(err)
	}
	return v, ok
}

func (e *env) natEntry(k maps.Tuple) (maps.NATEntry, bool) {
	e.t.Helper()
	v, ok, err := e.nat.Lookup(k)
	if err != nil {
		e.t.Fatal(err)
	}
	return v, ok
}

// send runs prog on pkt and returns the packet as it left, failing on a drop.
func (e *env) send(prog *ebpf.Program, pkt []byte) flow {
	e.t.Helper()
	ret, f, _ := e.run(prog, pkt)
	if ret == tcShot {
		e.t.Fatalf("packet %+v dropped", f)
	}
	return f
}

func tcpFlow(src, dst string, sport, dport uint16, flags uint8) flow {
	return flow{Src: src, Dst: dst, SPort: sport, DPort: dport, Proto: protoTCP, TCPFlags: flags}
}

// replyProg is the program a backend's reply to a local client passes:
// from_container when the backend is a local pod, from_netdev when it
// arrives from another node.
func (e *env) replyProg(backend string) *ebpf.Program {
	if backend == podLocal {
		return e.o.FromContainer
	}
	return e.o.FromNetdev
}

// serviceFlow runs a whole TCP connection client:sport -> frontend:80,
// DNATed to backend:8080, from handshake to close (FIN both ways, last
// ACK).
func (e *env) serviceFlow(client string, sport uint16, frontend, backend string) {
	e.t.Helper()
	fc, rp := e.o.FromContainer, e.replyProg(backend)
	steps := []struct {
		name string
		prog *ebpf.Program
		pkt  []byte
		want flow
	}{
		{"syn", fc, tcpPkt(client, frontend, sport, 80, tcpSYN), tcpFlow(client, backend, sport, 8080, tcpSYN)},
		{"syn-ack", rp, tcpPkt(backend, client, 8080, sport, tcpSYN|tcpACK), tcpFlow(frontend, client, 80, sport, tcpSYN|tcpACK)},
		{"ack", fc, tcpPkt(client, frontend, sport, 80, tcpACK), tcpFlow(client, backend, sport, 8080, tcpACK)},
		{"fin", fc, tcpPkt(client, frontend, sport, 80, tcpFIN|tcpACK), tcpFlow(client, backend, sport, 8080, tcpFIN|tcpACK)},
		{"fin-ack", rp, tcpPkt(backend, client, 8080, sport, tcpFIN|tcpACK), tcpFlow(frontend, client, 80, sport, tcpFIN|tcpACK)},
		{"last ack", fc, tcpPkt(client, frontend, sport, 80, tcpACK), tcpFlow(client, backend, sport, 8080, tcpACK)},
	}
	for _, s := range steps {
		ret, f, _ := e.run(s.prog, s.pkt)
		if ret == tcShot {
			e.t.Fatalf("service flow, %s: dropped", s.name)
		}
		check(e.t, "service flow, "+s.name, ret, ret, f, s.want)
	}
}

// The benchmark's stall: a client connects to a Service, the connection
// closes, and the client's next connection from the same source port goes
// straight to the backend's address. The backend's SYN-ACK must reach the
// client as it was sent; rewritten to come from the Service address it
// matches no socket, the client drops it and retransmits its SYN.
func TestCTClosedServiceFlowDoesNotRewriteDirectConnection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend string
		age     time.Duration // since the close
	}{
		{"local backend, right after close", podLocal, 0},
		{"local backend, after the closing lifetime", podLocal, 11 * time.Second},
		{"remote backend, right after close", podFar, 0},
		{"remote backend, after the closing lifetime", podFar, 11 * time.Second},
		{"remote backend, a minute later", podFar, 61 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, FlagKPR, false)
			e.services(svc("TCP", vip+":80", 0, tc.backend+":8080"))
			e.serviceFlow(podA, 40000, vip, tc.backend)
			if tc.age > 0 {
				e.ageCT(tc.age)
			}

			// the same client port, now to the backend's own address
			f := e.send(e.o.FromContainer, tcpPkt(podA, tc.backend, 40000, 8080, tcpSYN))
			check(t, "direct syn", 0, 0, f, tcpFlow(podA, tc.backend, 40000, 8080, tcpSYN))
			f = e.send(e.replyProg(tc.backend), tcpPkt(tc.backend, podA, 8080, 40000, tcpSYN|tcpACK))
			check(t, "direct syn-ack", 0, 0, f, tcpFlow(tc.backend, podA, 8080, 40000, tcpSYN|tcpACK))
			f = e.send(e.replyProg(tc.backend), tcpPkt(tc.backend, podA, 8080, 40000, tcpACK))
			check(t, "direct data", 0, 0, f, tcpFlow(tc.backend, podA, 8080, 40000, tcpACK))
		})
	}
}

// Two Services share a backend: a client's closed flow to the first must
// not make the replies of its next flow, to the second Service from the
// same port, come from the first Service's address.
func TestCTReplyEntryFollowsTheNewFlow(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	e.services(svc("TCP", vip+":80", 0, podFar+":8080"), svc("TCP", vip2+":80", 0, podFar+":8080"))
	e.serviceFlow(podA, 40000, vip, podFar)

	f := e.send(e.o.FromContainer, tcpPkt(podA, vip2, 40000, 80, tcpSYN))
	check(t, "syn to the second service", 0, 0, f, tcpFlow(podA, podFar, 40000, 8080, tcpSYN))
	f = e.send(e.o.FromNetdev, tcpPkt(podFar, podA, 8080, 40000, tcpSYN|tcpACK))
	check(t, "syn-ack", 0, 0, f, tcpFlow(vip2, podA, 80, 40000, tcpSYN|tcpACK))
}

// A new SYN from the port of a closed flow is a new connection: it gets a
// backend of its own, not the closed flow's, which may be terminating
// (its endpoint about to go) or hold the old connection in TIME-WAIT.
func TestCTSynOnClosedFlowSelectsAgain(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	web := svc("TCP", vip+":80", 0, podFar+":8080", podFar2+":8080")
	e.services(web)

	// find a client port whose flow went to podFar
	var sport uint16
	for p := uint16(40000); p < 40100 && sport == 0; p++ {
		if f := e.send(e.o.FromContainer, tcpPkt(podA, vip, p, 80, tcpSYN)); f.Dst == podFar {
			sport = p
		}
	}
	if sport == 0 {
		t.Fatal("no flow went to " + podFar)
	}
	steps := []struct {
		name string
		prog *ebpf.Program
		pkt  []byte
		want flow
	}{
		{"syn-ack", e.o.FromNetdev, tcpPkt(podFar, podA, 8080, sport, tcpSYN|tcpACK), tcpFlow(vip, podA, 80, sport, tcpSYN|tcpACK)},
		{"ack", e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpACK), tcpFlow(podA, podFar, sport, 8080, tcpACK)},
		{"fin", e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpFIN|tcpACK), tcpFlow(podA, podFar, sport, 8080, tcpFIN|tcpACK)},
		{"fin-ack", e.o.FromNetdev, tcpPkt(podFar, podA, 8080, sport, tcpFIN|tcpACK), tcpFlow(vip, podA, 80, sport, tcpFIN|tcpACK)},
		{"last ack", e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpACK), tcpFlow(podA, podFar, sport, 8080, tcpACK)},
	}
	for _, s := range steps {
		check(t, s.name, 0, 0, e.send(s.prog, s.pkt), s.want)
	}

	// podFar is terminating: its established flows stay, new ones go elsewhere
	web.Backends[0].Terminating = true
	e.services(web)
	f := e.send(e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpSYN))
	check(t, "new syn from the closed flow's port", 0, 0, f, tcpFlow(podA, podFar2, sport, 8080, tcpSYN))
	f = e.send(e.o.FromNetdev, tcpPkt(podFar2, podA, 8080, sport, tcpSYN|tcpACK))
	check(t, "its syn-ack", 0, 0, f, tcpFlow(vip, podA, 80, sport, tcpSYN|tcpACK))
	// a late retransmission of the old backend's FIN is not the new flow's
	f = e.send(e.o.FromNetdev, tcpPkt(podFar, podA, 8080, sport, tcpFIN|tcpACK))
	check(t, "old backend's late fin", 0, 0, f, tcpFlow(podFar, podA, 8080, sport, tcpFIN|tcpACK))
}

// A remote outside the cluster opened a flow to a pod; the pod's replies
// keep its address. Once that flow closed, the pod opening a connection to
// the same remote from the same port is a flow of its own, masqueraded.
func TestCTInboundFlowClosedThenPodConnectsOut(t *testing.T) {
	e := newEnv(t, FlagMasquerade|FlagKPR, false)
	steps := []struct {
		name string
		prog *ebpf.Program
		pkt  []byte
		want flow
	}{
		{"remote syn", e.o.FromNetdev, tcpPkt(world, podA, 55555, 8080, tcpSYN), tcpFlow(world, podA, 55555, 8080, tcpSYN)},
		{"pod syn-ack", e.o.ToNetdev, tcpPkt(podA, world, 8080, 55555, tcpSYN|tcpACK), tcpFlow(podA, world, 8080, 55555, tcpSYN|tcpACK)},
		{"remote ack", e.o.FromNetdev, tcpPkt(world, podA, 55555, 8080, tcpACK), tcpFlow(world, podA, 55555, 8080, tcpACK)},
		{"remote fin", e.o.FromNetdev, tcpPkt(world, podA, 55555, 8080, tcpFIN|tcpACK), tcpFlow(world, podA, 55555, 8080, tcpFIN|tcpACK)},
		{"pod fin", e.o.ToNetdev, tcpPkt(podA, world, 8080, 55555, tcpFIN|tcpACK), tcpFlow(podA, world, 8080, 55555, tcpFIN|tcpACK)},
		{"remote last ack", e.o.FromNetdev, tcpPkt(world, podA, 55555, 8080, tcpACK), tcpFlow(world, podA, 55555, 8080, tcpACK)},
	}
	for _, s := range steps {
		check(t, s.name, 0, 0, e.send(s.prog, s.pkt), s.want)
	}
	f := e.send(e.o.ToNetdev, tcpPkt(podA, world, 8080, 55555, tcpSYN))
	if f.Src != nodeIP {
		t.Errorf("the pod's own connection left as %s:%d, want it masqueraded to %s", f.Src, f.SPort, nodeIP)
	}
}

// ctState is what a test asserts about an entry's state.
type ctState struct {
	Flags  []string
	Tx, Rx uint8
}

func stateOf(e maps.CTEntry) ctState {
	return ctState{Flags: maps.StateNames(e.Flags), Tx: e.TxFlagsSeen, Rx: e.RxFlagsSeen}
}

// Each state of a flow has its lifetime: an entry lives that long after
// its last packet and no longer. Replies of an expired flow are not
// translated (its reply entry is deleted); those of a live one are.
func TestCTLifetimes(t *testing.T) {
	type pkt struct {
		reply bool
		flags uint8 // TCP flags; UDP when the case is UDP
	}
	syn, synAck, ack := uint8(tcpSYN), uint8(tcpSYN|tcpACK), uint8(tcpACK)
	finAck, rst := uint8(tcpFIN|tcpACK), uint8(tcpRST)
	for _, tc := range []struct {
		name     string
		proto    uint8
		pkts     []pkt
		want     ctState
		lifetime time.Duration
		probe    uint8 // flags of the reply that probes the entry: it leaves the lifetime as it is
		legacy   bool  // strip the state bits, as an entry written before lifetimes
	}{
		{name: "tcp syn only", proto: protoTCP, pkts: []pkt{{false, syn}},
			want: ctState{Flags: nil, Tx: syn}, lifetime: 60 * time.Second, probe: synAck},
		{name: "tcp syn answered", proto: protoTCP, pkts: []pkt{{false, syn}, {true, synAck}},
			want: ctState{Flags: []string{"SeenReply"}, Tx: syn, Rx: synAck}, lifetime: 60 * time.Second, probe: synAck},
		{name: "tcp established", proto: protoTCP, pkts: []pkt{{false, syn}, {true, synAck}, {false, ack}},
			want:     ctState{Flags: []string{"SeenNonSyn", "SeenReply"}, Tx: syn | ack, Rx: synAck},
			lifetime: 21600 * time.Second, probe: ack},
		{name: "tcp fin from the client", proto: protoTCP, pkts: []pkt{{false, syn}, {true, synAck}, {false, ack}, {false, finAck}},
			want:     ctState{Flags: []string{"TxClosing", "SeenNonSyn", "SeenReply"}, Tx: syn | finAck, Rx: synAck},
			lifetime: 10 * time.Second, probe: ack},
		{name: "tcp fin from the backend", proto: protoTCP, pkts: []pkt{{false, syn}, {true, synAck}, {false, ack}, {true, finAck}},
			want:     ctState{Flags: []string{"RxClosing", "SeenNonSyn", "SeenReply"}, Tx: syn | ack, Rx: synAck | tcpFIN},
			lifetime: 10 * time.Second, probe: ack},
		{name: "tcp closed both ways", proto: protoTCP,
			pkts:     []pkt{{false, syn}, {true, synAck}, {false, ack}, {false, finAck}, {true, finAck}, {false, ack}},
			want:     ctState{Flags: []string{"RxClosing", "TxClosing", "SeenNonSyn", "SeenReply"}, Tx: syn | finAck, Rx: synAck | tcpFIN},
			lifetime: 10 * time.Second, probe: ack},
		{name: "tcp reset by the backend", proto: protoTCP, pkts: []pkt{{false, syn}, {true, rst | tcpACK}},
			want:     ctState{Flags: []string{"RxClosing", "TxClosing", "SeenNonSyn", "SeenReply"}, Tx: syn, Rx: rst | tcpACK},
			lifetime: 10 * time.Second, probe: ack},
		{name: "tcp reset by the client", proto: protoTCP, pkts: []pkt{{false, syn}, {true, synAck}, {false, rst}},
			want:     ctState{Flags: []string{"RxClosing", "TxClosing", "SeenNonSyn", "SeenReply"}, Tx: syn | rst, Rx: synAck},
			lifetime: 10 * time.Second, probe: ack},
		{name: "udp", proto: protoUDP, pkts: []pkt{{false, 0}, {true, 0}},
			want: ctState{Flags: []string{"SeenReply"}}, lifetime: 60 * time.Second},
		{name: "tcp entry from before lifetimes", proto: protoTCP, pkts: []pkt{{false, syn}, {true, synAck}, {false, ack}},
			want:     ctState{Flags: []string{"SeenNonSyn", "SeenReply"}, Tx: syn | ack, Rx: synAck},
			lifetime: 21600 * time.Second, probe: ack, legacy: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, FlagKPR, false)
			port := uint16(8080)
			proto := "TCP"
			if tc.proto == protoUDP {
				proto = "UDP"
			}
			e.services(svc(proto, vip+":80", 0, podFar+":8080"))
			fwd := func(flags uint8) []byte {
				if tc.proto == protoUDP {
					return udpPkt(podA, vip, 40000, 80)
				}
				return tcpPkt(podA, vip, 40000, 80, flags)
			}
			rev := func(flags uint8) []byte {
				if tc.proto == protoUDP {
					return udpPkt(podFar, podA, port, 40000)
				}
				return tcpPkt(podFar, podA, port, 40000, flags)
			}
			for _, p := range tc.pkts {
				if p.reply {
					if f := e.send(e.o.FromNetdev, rev(p.flags)); f.Src != vip {
						t.Fatalf("reply %#x not translated: %+v", p.flags, f)
					}
				} else if f := e.send(e.o.FromContainer, fwd(p.flags)); f.Dst != podFar {
					t.Fatalf("request %#x not translated: %+v", p.flags, f)
				}
			}
			fk := tuple(podA, vip, 40000, 80, tc.proto, maps.DirCTService)
			rk := tuple(podFar, podA, port, 40000, tc.proto, maps.DirCTReply)
			fe, ok := e.ctEntry(fk)
			if !ok {
				t.Fatal("no forward entry")
			}
			re, ok := e.ctEntry(rk)
			if !ok {
				t.Fatal("no reply entry")
			}
			if d := cmp.Diff(tc.want, stateOf(fe)); d != "" {
				t.Errorf("forward entry state (-want +got):\n%s", d)
			}
			if d := cmp.Diff(stateOf(fe), stateOf(re)); d != "" {
				t.Errorf("reply entry state differs from the forward one (-forward +reply):\n%s", d)
			}
			if fe.Flags&maps.CTFlagTracked == 0 {
				t.Errorf("forward entry flags %#x lack CTFlagTracked", fe.Flags)
			}
			if tc.legacy {
				for _, k := range []maps.Tuple{fk, rk} {
					v, _ := e.ctEntry(k)
					v.Flags &^= maps.CTFlagState
					v.TxFlagsSeen, v.RxFlagsSeen = 0, 0
					if err := e.ct.Update(k, v); err != nil {
						t.Fatal(err)
					}
				}
				fe, _ = e.ctEntry(fk)
			}
			if got := maps.Lifetime(tc.proto, fe.Flags); got != tc.lifetime {
				t.Errorf("maps.Lifetime %s, want %s", got, tc.lifetime)
			}

			// just inside its lifetime the flow goes on
			e.ageCT(tc.lifetime - 2*time.Second)
			if f := e.send(e.o.FromNetdev, rev(tc.probe)); f.Src != vip {
				t.Errorf("reply %2s before the end of the lifetime not translated: %+v", tc.lifetime-2*time.Second, f)
			}
			// just past it, the flow is over
			e.ageCT(tc.lifetime + 2*time.Second)
			if f := e.send(e.o.FromNetdev, rev(tc.probe)); f.Src != podFar {
				t.Errorf("reply %s after the flow's last packet translated: %+v", tc.lifetime+2*time.Second, f)
			}
			if _, ok := e.ctEntry(rk); ok {
				t.Error("the expired flow's reply entry is still there")
			}
			// and the client's next packet starts a new one
			if f := e.send(e.o.FromContainer, fwd(syn)); f.Dst != podFar {
				t.Fatalf("new flow not translated: %+v", f)
			}
			if fe, _ = e.ctEntry(fk); tc.proto == protoTCP && fe.Flags&(maps.CTFlagSeenReply|maps.CTFlagTxClosing|maps.CTFlagRxClosing) != 0 {
				t.Errorf("new flow inherited the state %v", maps.StateNames(fe.Flags))
			}
			if f := e.send(e.o.FromNetdev, rev(tc.probe)); f.Src != vip {
				t.Errorf("reply of the new flow not translated: %+v", f)
			}
		})
	}
}

// Retransmissions of a SYN are the same connection: they keep its
// backend, as long as the flow is not closing.
func TestCTSynRetransmissionKeepsBackend(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	e.services(svc("TCP", vip+":80", 0, "198.19.1.21:8080", "198.19.1.22:8080", "198.19.1.23:8080", "198.19.1.24:8080"))
	for sport := uint16(40000); sport < 40010; sport++ {
		first := e.send(e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpSYN))
		for range 10 {
			if f := e.send(e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpSYN)); f.Dst != first.Dst {
				t.Fatalf("retransmitted SYN from %d went to %s, the first to %s", sport, f.Dst, first.Dst)
			}
		}
	}
}

// An entry is written for a packet only when the flow's state changes or
// its last refresh is a second old.
func TestCTRefreshIsRateLimited(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	e.services(svc("TCP", vip+":80", 0, podFar+":8080"))
	for _, p := range []struct {
		prog *ebpf.Program
		pkt  []byte
	}{
		{e.o.FromContainer, tcpPkt(podA, vip, 40000, 80, tcpSYN)},
		{e.o.FromNetdev, tcpPkt(podFar, podA, 8080, 40000, tcpSYN|tcpACK)},
		{e.o.FromContainer, tcpPkt(podA, vip, 40000, 80, tcpACK)},
	} {
		e.send(p.prog, p.pkt)
	}
	fk := tuple(podA, vip, 40000, 80, protoTCP, maps.DirCTService)
	fe, _ := e.ctEntry(fk)
	written := monoNow(t)
	fe.LastSeen = written
	if err := e.ct.Update(fk, fe); err != nil {
		t.Fatal(err)
	}
	e.send(e.o.FromContainer, tcpPkt(podA, vip, 40000, 80, tcpACK))
	elapsed := time.Duration(monoNow(t) - written)
	got, _ := e.ctEntry(fk)
	switch {
	case elapsed < time.Second && got.LastSeen != written:
		t.Errorf("an unchanged flow was rewritten %s after its last refresh", elapsed)
	case elapsed >= time.Second && got.LastSeen == written:
		t.Errorf("the flow was not refreshed %s after its last refresh", elapsed)
	}
	// a state change is written at once
	e.send(e.o.FromContainer, tcpPkt(podA, vip, 40000, 80, tcpFIN|tcpACK))
	if got, _ = e.ctEntry(fk); got.Flags&maps.CTFlagTxClosing == 0 || got.LastSeen == written {
		t.Errorf("FIN not recorded at once: flags %v, last seen moved %t", maps.StateNames(got.Flags), got.LastSeen != written)
	}
}

// Masquerade ports are recycled: the port of a closed (or expired) flow
// goes to the next flow that wants it, never the port of a live one; the
// old flow's entries go and its late packets get a translation of their
// own.
func TestNATPortReuseAfterExpiry(t *testing.T) {
	const podA3 = "198.19.1.12"
	for _, tc := range []struct {
		name   string
		age    time.Duration // of the closed flow's entries
		reused bool
	}{
		{"closing flow keeps its port", 8 * time.Second, false},
		{"expired flow gives its port up", 12 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, FlagMasquerade|FlagKPR, false)
			steps := []struct {
				name string
				prog *ebpf.Program
				pkt  []byte
				want flow
			}{
				{"syn", e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpSYN), tcpFlow(nodeIP, world, 50000, 80, tcpSYN)},
				{"syn-ack", e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 50000, tcpSYN|tcpACK), tcpFlow(world, podA, 80, 50000, tcpSYN|tcpACK)},
				{"ack", e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpACK), tcpFlow(nodeIP, world, 50000, 80, tcpACK)},
				{"fin", e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpFIN|tcpACK), tcpFlow(nodeIP, world, 50000, 80, tcpFIN|tcpACK)},
				{"fin-ack", e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 50000, tcpFIN|tcpACK), tcpFlow(world, podA, 80, 50000, tcpFIN|tcpACK)},
				{"last ack", e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpACK), tcpFlow(nodeIP, world, 50000, 80, tcpACK)},
			}
			for _, s := range steps {
				check(t, s.name, 0, 0, e.send(s.prog, s.pkt), s.want)
			}
			ek := tuple(podA, world, 50000, 80, protoTCP, maps.DirNATEgress)
			ne, ok := e.natEntry(ek)
			if !ok {
				t.Fatal("no egress entry")
			}
			if d := cmp.Diff([]string{"RxClosing", "TxClosing", "SeenNonSyn", "SeenReply"}, maps.StateNames(ne.Flags)); d != "" {
				t.Errorf("egress entry state (-want +got):\n%s", d)
			}
			ik := tuple(world, nodeIP, 80, 50000, protoTCP, maps.DirNATReply)
			if ie, _ := e.natEntry(ik); ie.Flags != ne.Flags || ie.LastSeen != ne.LastSeen {
				t.Errorf("ingress entry state %v/%d, egress %v/%d", maps.StateNames(ie.Flags), ie.LastSeen, maps.StateNames(ne.Flags), ne.LastSeen)
			}
			e.ageNAT(tc.age, func(r maps.NATRow) bool { return true })

			// another pod wants the same port to the same server
			f := e.send(e.o.ToNetdev, tcpPkt(podA3, world, 50000, 80, tcpSYN))
			if f.Src != nodeIP || f.SPort < NATPortMin {
				t.Fatalf("new flow left as %s:%d", f.Src, f.SPort)
			}
			if got := f.SPort == 50000; got != tc.reused {
				t.Fatalf("new flow got port %d: reused %t, want %t", f.SPort, got, tc.reused)
			}
			newPort := f.SPort
			f = e.send(e.o.FromNetdev, tcpPkt(world, nodeIP, 80, newPort, tcpSYN|tcpACK))
			check(t, "new flow's reply", 0, 0, f, tcpFlow(world, podA3, 80, 50000, tcpSYN|tcpACK))
			if !tc.reused {
				// the closing flow still has its own
				f = e.send(e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 50000, tcpACK))
				check(t, "closing flow's reply", 0, 0, f, tcpFlow(world, podA, 80, 50000, tcpACK))
				return
			}
			if _, ok := e.natEntry(ek); ok {
				t.Error("the expired flow's egress entry is still there")
			}
			// a late packet of the old flow is a flow of its own
			f = e.send(e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpACK))
			if f.Src != nodeIP || f.SPort == 50000 {
				t.Errorf("old flow's late packet left as %s:%d, want another port of the node", f.Src, f.SPort)
			}
		})
	}
}

// A SYN on a closing masqueraded flow opens a new connection: new state,
// and the flow's own port again (it released it).
func TestNATSynOnClosingFlow(t *testing.T) {
	e := newEnv(t, FlagMasquerade|FlagKPR, false)
	for _, s := range []struct {
		prog *ebpf.Program
		pkt  []byte
	}{
		{e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpSYN)},
		{e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 50000, tcpSYN|tcpACK)},
		{e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpACK)},
		{e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 50000, tcpRST)},
	} {
		e.send(s.prog, s.pkt)
	}
	f := e.send(e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpSYN))
	check(t, "new syn", 0, 0, f, tcpFlow(nodeIP, world, 50000, 80, tcpSYN))
	ne, _ := e.natEntry(tuple(podA, world, 50000, 80, protoTCP, maps.DirNATEgress))
	if names := maps.StateNames(ne.Flags); len(names) != 0 {
		t.Errorf("new connection inherited the state %v", names)
	}
	f = e.send(e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 50000, tcpSYN|tcpACK))
	check(t, "its reply", 0, 0, f, tcpFlow(world, podA, 80, 50000, tcpSYN|tcpACK))
}

// Replies of an expired masqueraded flow are not translated, and its
// ingress entry goes.
func TestNATExpiredFlowReplies(t *testing.T) {
	e := newEnv(t, FlagMasquerade|FlagKPR, false)
	e.send(e.o.ToNetdev, udpPkt(podA, world, 50000, 53))
	f := e.send(e.o.FromNetdev, udpPkt(world, nodeIP, 53, 50000))
	check(t, "reply", 0, 0, f, flow{Src: world, Dst: podA, SPort: 53, DPort: 50000, Proto: protoUDP})
	e.ageNAT(maps.LifetimeNonTCP-2*time.Second, func(maps.NATRow) bool { return true })
	f = e.send(e.o.FromNetdev, udpPkt(world, nodeIP, 53, 50000))
	check(t, "reply in time", 0, 0, f, flow{Src: world, Dst: podA, SPort: 53, DPort: 50000, Proto: protoUDP})
	e.ageNAT(maps.LifetimeNonTCP+2*time.Second, func(maps.NATRow) bool { return true })
	f = e.send(e.o.FromNetdev, udpPkt(world, nodeIP, 53, 50000))
	check(t, "late reply", 0, 0, f, flow{Src: world, Dst: nodeIP, SPort: 53, DPort: 50000, Proto: protoUDP})
	if _, ok := e.natEntry(tuple(world, nodeIP, 53, 50000, protoUDP, maps.DirNATReply)); ok {
		t.Error("the expired flow's ingress entry is still there")
	}
}
