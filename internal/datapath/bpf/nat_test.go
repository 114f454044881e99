package bpf

import (
	"net/netip"
	"testing"
)

func TestDecodeDetectsBadChecksums(t *testing.T) {
	for name, corrupt := range map[string]int{"ip": 14 + 10, "tcp": 14 + 20 + 16, "payload": 14 + 40 + 2} {
		pkt := tcpPkt(podA, world, 1, 2, tcpSYN)
		pkt[corrupt] ^= 0x40
		if _, err := decode(pkt); err == nil {
			t.Errorf("%s: corrupted packet decoded without error", name)
		}
	}
	inner := udpPkt(nodeIP, world, 1, 2)
	pkt := icmpErr(router, nodeIP, 3, 3, inner)
	pkt[14+20+8+12] ^= 1 // inner source, without fixing any checksum
	if _, err := decode(pkt); err == nil {
		t.Error("ICMP error with a corrupted quote decoded without error")
	}
}

func TestMasquerade(t *testing.T) {
	e := newEnv(t, FlagMasquerade|FlagKPR, false)

	// pod -> world keeps its port when it is free and in the NAT range
	ret, f, _ := e.run(e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpSYN))
	check(t, "snat", ret, tcOK, f, flow{Src: nodeIP, Dst: world, SPort: 50000, DPort: 80, Proto: protoTCP, TCPFlags: tcpSYN})
	ret, f, _ = e.run(e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 50000, tcpSYN|tcpACK))
	check(t, "reply", ret, tcOK, f, flow{Src: world, Dst: podA, SPort: 80, DPort: 50000, Proto: protoTCP, TCPFlags: tcpSYN | tcpACK})

	// a second pod with the same source port to the same destination
	ret, f, _ = e.run(e.o.ToNetdev, tcpPkt(podA2, world, 50000, 80, tcpSYN))
	if ret != tcOK || f.Src != nodeIP || f.SPort == 50000 || f.SPort < NATPortMin {
		t.Fatalf("colliding flow: verdict %d, %+v; want the node's address and another port in %d-%d", ret, f, NATPortMin, NATPortMax)
	}
	port2 := f.SPort
	// both flows stay stable
	_, f, _ = e.run(e.o.ToNetdev, tcpPkt(podA2, world, 50000, 80, tcpACK))
	if f.SPort != port2 {
		t.Errorf("second packet got port %d, first %d", f.SPort, port2)
	}
	_, f, _ = e.run(e.o.ToNetdev, tcpPkt(podA, world, 50000, 80, tcpACK))
	if f.SPort != 50000 {
		t.Errorf("first flow moved to port %d", f.SPort)
	}
	// replies go back to the right pod
	ret, f, _ = e.run(e.o.FromNetdev, tcpPkt(world, nodeIP, 80, port2, tcpACK))
	check(t, "reply 2", ret, tcOK, f, flow{Src: world, Dst: podA2, SPort: 80, DPort: 50000, Proto: protoTCP, TCPFlags: tcpACK})
	ret, f, _ = e.run(e.o.FromNetdev, tcpPkt(world, nodeIP, 80, 50000, tcpACK))
	check(t, "reply 1", ret, tcOK, f, flow{Src: world, Dst: podA, SPort: 80, DPort: 50000, Proto: protoTCP, TCPFlags: tcpACK})

	// inside the cluster nothing is translated
	ret, f, _ = e.run(e.o.ToNetdev, tcpPkt(podA, podFar, 40001, 80, tcpSYN))
	check(t, "in cluster", ret, tcOK, f, flow{Src: podA, Dst: podFar, SPort: 40001, DPort: 80, Proto: protoTCP, TCPFlags: tcpSYN})
	// nor traffic the node itself sends
	ret, f, _ = e.run(e.o.ToNetdev, udpPkt(nodeIP, world, 40001, 53))
	check(t, "node", ret, tcOK, f, flow{Src: nodeIP, Dst: world, SPort: 40001, DPort: 53, Proto: protoUDP})
	// and traffic for the node that is not ours stays as it is
	ret, f, _ = e.run(e.o.FromNetdev, udpPkt(world, nodeIP, 53, 40001))
	check(t, "unknown reply", ret, tcOK, f, flow{Src: world, Dst: nodeIP, SPort: 53, DPort: 40001, Proto: protoUDP})
}

// Translated source ports stay in NATPortMin..NATPortMax, out of the
// node's own ephemeral range (which Init ends at NATPortMin-1): a pod's
// port is kept only inside the NAT range, on both sides of its bounds.
func TestMasqueradePortRange(t *testing.T) {
	e := newEnv(t, FlagMasquerade|FlagKPR, false)
	for i, tc := range []struct {
		sport uint16
		kept  bool
	}{
		{32768, false}, {40000, false}, {NATPortMin - 1, false},
		{NATPortMin, true}, {NATPortMin + 1, true}, {60999, true}, {NATPortMax, true},
	} {
		dport := uint16(8000 + i) // a flow of its own
		ret, f, _ := e.run(e.o.ToNetdev, udpPkt(podA, world, tc.sport, dport))
		if ret != tcOK || f.Src != nodeIP {
			t.Fatalf("sport %d: verdict %d, %+v", tc.sport, ret, f)
		}
		if f.SPort < NATPortMin || f.SPort > NATPortMax {
			t.Errorf("sport %d translated to %d, outside %d-%d", tc.sport, f.SPort, NATPortMin, NATPortMax)
		}
		if kept := f.SPort == tc.sport; kept != tc.kept {
			t.Errorf("sport %d translated to %d: kept=%v, want %v", tc.sport, f.SPort, kept, tc.kept)
		}
		// and the reply finds its way back
		ret, back, _ := e.run(e.o.FromNetdev, udpPkt(world, nodeIP, dport, f.SPort))
		check(t, "reply", ret, tcOK, back, flow{Src: world, Dst: podA, SPort: dport, DPort: tc.sport, Proto: protoUDP})
	}
	// Many pods with one source port below the range to one remote: every
	// flow gets its own port in the range.
	seen := map[uint16]bool{}
	for i := range 50 {
		src := netip.AddrFrom4([4]byte{198, 19, 1, byte(100 + i)}).String()
		_, f, _ := e.run(e.o.ToNetdev, tcpPkt(src, world, 40000, 443, tcpSYN))
		if f.SPort < NATPortMin || seen[f.SPort] {
			t.Fatalf("pod %s: port %d (duplicate %v), want a fresh one in %d-%d", src, f.SPort, seen[f.SPort], NATPortMin, NATPortMax)
		}
		seen[f.SPort] = true
	}
}

func TestMasqueradeDisabled(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	ret, f, _ := e.run(e.o.ToNetdev, tcpPkt(podA, world, 40000, 80, tcpSYN))
	check(t, "no snat", ret, tcOK, f, flow{Src: podA, Dst: world, SPort: 40000, DPort: 80, Proto: protoTCP, TCPFlags: tcpSYN})
}

func TestMasqueradeICMPEcho(t *testing.T) {
	e := newEnv(t, FlagMasquerade, false)
	ret, f, _ := e.run(e.o.ToNetdev, echoPkt(podA, world, 8, 0x1234))
	check(t, "echo", ret, tcOK, f, flow{Src: nodeIP, Dst: world, SPort: 0x1234, Proto: protoICMP, ICMPType: 8})
	ret, f, _ = e.run(e.o.ToNetdev, echoPkt(podA2, world, 8, 0x1234))
	id2 := f.SPort
	if ret != tcOK || f.Src != nodeIP || id2 == 0x1234 {
		t.Fatalf("second pod, same id: verdict %d %+v; want the node's address and another id", ret, f)
	}
	ret, f, _ = e.run(e.o.FromNetdev, echoPkt(world, nodeIP, 0, 0x1234))
	check(t, "reply 1", ret, tcOK, f, flow{Src: world, Dst: podA, SPort: 0x1234, Proto: protoICMP})
	ret, f, _ = e.run(e.o.FromNetdev, echoPkt(world, nodeIP, 0, id2))
	check(t, "reply 2", ret, tcOK, f, flow{Src: world, Dst: podA2, SPort: 0x1234, Proto: protoICMP})
}

func TestMasqueradeICMPError(t *testing.T) {
	e := newEnv(t, FlagMasquerade, false)
	// take the translated port of a second pod so the quote must be
	// rewritten in port as well as address
	e.run(e.o.ToNetdev, udpPkt(podA2, world, 5000, 53))
	ret, out, sent := e.run(e.o.ToNetdev, udpPkt(podA, world, 5000, 53))
	if ret != tcOK || out.Src != nodeIP || out.SPort == 5000 {
		t.Fatalf("snat: verdict %d %+v", ret, out)
	}
	for _, typ := range []uint8{3, 11} {
		ret, f, _ := e.run(e.o.FromNetdev, icmpErr(router, nodeIP, typ, 0, sent))
		check(t, "icmp error", ret, tcOK, f, flow{Src: router, Dst: podA, Proto: protoICMP, ICMPType: typ,
			Inner: &flow{Src: podA, Dst: world, SPort: 5000, DPort: 53, Proto: protoUDP}})
	}

	// an error about an echo request
	_, _, sent = e.run(e.o.ToNetdev, echoPkt(podA, world, 8, 0x77))
	ret, f, _ := e.run(e.o.FromNetdev, icmpErr(router, nodeIP, 11, 0, sent))
	check(t, "icmp error about echo", ret, tcOK, f, flow{Src: router, Dst: podA, Proto: protoICMP, ICMPType: 11,
		Inner: &flow{Src: podA, Dst: world, SPort: 0x77, Proto: protoICMP, ICMPType: 8}})

	// the quote may be cut after 8 bytes of L4: TCP checksum not quoted
	_, _, sent = e.run(e.o.ToNetdev, tcpPkt(podA, world, 40000, 443, tcpSYN))
	quote := sent[:14+20+8]
	ret, f, _ = e.run(e.o.FromNetdev, icmpErr(router, nodeIP, 3, 4, quote))
	check(t, "truncated quote", ret, tcOK, f, flow{Src: router, Dst: podA, Proto: protoICMP, ICMPType: 3,
		Inner: &flow{Src: podA, Dst: world, SPort: 40000, DPort: 443, Proto: protoTCP}})
}

func TestLBICMPError(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	e.services(svc("UDP", vip+":53", 0, podFar+":5353"))
	_, _, sent := e.run(e.o.FromContainer, udpPkt(podA, vip, 5000, 53))
	// the backend answers port unreachable
	ret, f, _ := e.run(e.o.FromNetdev, icmpErr(podFar, podA, 3, 3, sent))
	check(t, "from backend", ret, tcOK, f, flow{Src: vip, Dst: podA, Proto: protoICMP, ICMPType: 3,
		Inner: &flow{Src: podA, Dst: vip, SPort: 5000, DPort: 53, Proto: protoUDP}})
	// a router on the way: the outer source stays the router's
	ret, f, _ = e.run(e.o.FromNetdev, icmpErr("198.18.0.12", podA, 11, 0, sent))
	check(t, "from router", ret, tcOK, f, flow{Src: "198.18.0.12", Dst: podA, Proto: protoICMP, ICMPType: 11,
		Inner: &flow{Src: podA, Dst: vip, SPort: 5000, DPort: 53, Proto: protoUDP}})
}

func TestNodePort(t *testing.T) {
	e := newEnv(t, FlagKPR|FlagMasquerade, false)
	e.endpoint(podLocal, 42)
	e.services(svc("TCP", vip+":80", 30080, podLocal+":8080"), svc("TCP", vip+":81", 30081, podFar+":8080"))

	// local backend: DNAT only, the reply leaves the backend's veth
	// (translated packets are forwarded by the programs: a redirect)
	ret, f, _ := e.run(e.o.FromNetdev, tcpPkt(world, nodeIP, 50000, 30080, tcpSYN))
	check(t, "local backend", ret, tcRedirect, f, flow{Src: world, Dst: podLocal, SPort: 50000, DPort: 8080, Proto: protoTCP, TCPFlags: tcpSYN})
	ret, f, _ = e.run(e.o.FromContainer, tcpPkt(podLocal, world, 8080, 50000, tcpSYN|tcpACK))
	check(t, "local reply", ret, tcOK, f, flow{Src: nodeIP, Dst: world, SPort: 30080, DPort: 50000, Proto: protoTCP, TCPFlags: tcpSYN | tcpACK})

	// remote backend: DNAT and SNAT to the node, replies come back here
	ret, f, _ = e.run(e.o.FromNetdev, tcpPkt(world, nodeIP, 50001, 30081, tcpSYN))
	if ret != tcOK || f.Src != nodeIP || f.Dst != podFar || f.DPort != 8080 {
		t.Fatalf("remote backend: verdict %d %+v", ret, f)
	}
	ret, f, _ = e.run(e.o.FromNetdev, tcpPkt(podFar, nodeIP, 8080, f.SPort, tcpSYN|tcpACK))
	check(t, "remote reply", ret, tcOK, f, flow{Src: nodeIP, Dst: world, SPort: 30081, DPort: 50001, Proto: protoTCP, TCPFlags: tcpSYN | tcpACK})

	// a NodePort without backends resets
	e.services(svc("TCP", vip+":80", 30080))
	ret, f, _ = e.run(e.o.FromNetdev, tcpPkt(world, nodeIP, 50002, 30080, tcpSYN))
	check(t, "no backend", ret, tcRedirect, f, flow{Src: nodeIP, Dst: world, SPort: 30080, DPort: 50002, Proto: protoTCP,
		TCPFlags: tcpRST | tcpACK, TCPAck: 1006})
}

// A flow opened from outside the cluster to a pod (e.g. from another node's
// address) is not masqueraded on its way back.
func TestMasqueradeSkipsRepliesToInboundFlows(t *testing.T) {
	e := newEnv(t, FlagMasquerade|FlagKPR, false)
	ret, f, _ := e.run(e.o.FromNetdev, tcpPkt("198.18.0.12", podA, 45000, 8080, tcpSYN))
	check(t, "inbound", ret, tcOK, f, flow{Src: "198.18.0.12", Dst: podA, SPort: 45000, DPort: 8080, Proto: protoTCP, TCPFlags: tcpSYN})
	ret, f, _ = e.run(e.o.ToNetdev, tcpPkt(podA, "198.18.0.12", 8080, 45000, tcpSYN|tcpACK))
	check(t, "reply", ret, tcOK, f, flow{Src: podA, Dst: "198.18.0.12", SPort: 8080, DPort: 45000, Proto: protoTCP, TCPFlags: tcpSYN | tcpACK})
	// while a flow the pod opens to the same peer is masqueraded
	ret, f, _ = e.run(e.o.ToNetdev, tcpPkt(podA, "198.18.0.12", 50081, 45000, tcpSYN))
	check(t, "outbound", ret, tcOK, f, flow{Src: nodeIP, Dst: "198.18.0.12", SPort: 50081, DPort: 45000, Proto: protoTCP, TCPFlags: tcpSYN})
}
