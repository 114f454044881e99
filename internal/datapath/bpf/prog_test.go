package bpf

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

const (
	tcOK       = 0
	tcShot     = 2
	tcRedirect = 7

	nodeIP   = "198.18.0.11"
	podA     = "198.19.1.10"
	podA2    = "198.19.1.11"
	podLocal = "198.19.1.20" // backend on this node
	podFar   = "198.19.2.30" // backend on another node
	vip      = "198.18.128.10"
	world    = "198.18.64.10"
	router   = "198.18.64.1"
)

type env struct {
	t   *testing.T
	o   *objects
	lb  *lbWriter
	ct  *maps.CT
	nat *maps.NAT
	eps *maps.Endpoints
	met *maps.Metrics
	// viaUpdate: services() programs through UpdateServices (per
	// Service) rather than a full sync.
	viaUpdate bool
}

func newEnv(t *testing.T, flags uint32, maglev bool) *env {
	o := loadTest(t, flags)
	e := &env{
		t: t, o: o,
		lb: newLBWriter(maps.NewServices(o.Maps[maps.NameServices]), maps.NewBackends(o.Maps[maps.NameBackends]),
			maps.NewSlots(o.Maps[maps.NameSvcSlots]), maps.NewSlots(o.Maps[maps.NameMaglev]), maglev),
		ct:  maps.NewCT(o.Maps[maps.NameCT]),
		nat: maps.NewNAT(o.Maps[maps.NameNAT]),
		eps: maps.NewEndpoints(o.Maps[maps.NameEndpoints]),
		met: maps.NewMetrics(o.Maps[maps.NameMetrics]),
	}
	e.lb.affinity = maps.NewAffinity(o.Maps[maps.NameAffinity])
	return e
}

func svc(proto, frontend string, nodePort uint16, backends ...string) svcPort {
	s := svcPort{Namespace: "default", Name: "web", Protocol: proto,
		Frontend: netip.MustParseAddrPort(frontend), NodePort: nodePort}
	for _, b := range backends {
		s.Backends = append(s.Backends, state.Backend{Addr: netip.MustParseAddrPort(b), Ready: true})
	}
	return s
}

func (e *env) services(svcs ...svcPort) {
	e.t.Helper()
	if e.viaUpdate {
		if err := e.lb.updatePorts(byService(svcs...)); err != nil {
			e.t.Fatalf("update services: %v", err)
		}
		return
	}
	if err := e.lb.syncPorts(svcs); err != nil {
		e.t.Fatalf("sync services: %v", err)
	}
}

func (e *env) endpoint(ip string, ifindex uint32) {
	e.t.Helper()
	err := e.eps.Update(netip.MustParseAddr(ip), maps.EndpointInfo{IfIndex: ifindex,
		PodMAC: maps.MAC{0x02, 0xee, 0, 0, 0, byte(ifindex)}, HostMAC: maps.MAC{0x02, 0xaa, 0, 0, 0, byte(ifindex)}})
	if err != nil {
		e.t.Fatal(err)
	}
}

// run runs prog on pkt and decodes (and checksum-verifies) the output.
func (e *env) run(prog *ebpf.Program, pkt []byte) (uint32, flow, []byte) {
	e.t.Helper()
	out := make([]byte, len(pkt)+256)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out}
	ret, err := prog.Run(opts)
	if err != nil {
		e.t.Fatalf("run: %v", err)
	}
	out = opts.DataOut
	f, err := decode(out)
	if err != nil {
		e.t.Fatalf("output packet: %v", err)
	}
	return ret, f, out
}

func (e *env) metric(reason uint32) uint64 {
	e.t.Helper()
	rows, err := e.met.List()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range rows {
		if r.Reason == reason {
			return r.Packets
		}
	}
	return 0
}

func check(t *testing.T, what string, gotRet, wantRet uint32, got, want flow) {
	t.Helper()
	if gotRet != wantRet {
		t.Errorf("%s: verdict %d, want %d", what, gotRet, wantRet)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s: packet (-want +got):\n%s", what, d)
	}
}

func TestLBPicksBackendAndKeepsIt(t *testing.T) {
	for _, maglev := range []bool{false, true} {
		name := "random"
		if maglev {
			name = "maglev"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, FlagKPR, maglev)
			backends := []string{podLocal + ":8080", podFar + ":8080", "198.19.3.40:8080"}
			e.services(svc("TCP", vip+":80", 0, backends...))

			picked := map[string]int{}
			for sport := uint16(40000); sport < 40060; sport++ {
				ret, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpSYN))
				if ret != tcOK {
					t.Fatalf("verdict %d", ret)
				}
				if f.Src != podA || f.SPort != sport || f.DPort != 8080 {
					t.Fatalf("unexpected translation %+v", f)
				}
				picked[f.Dst]++
				// the same flow keeps its backend
				for range 3 {
					_, again, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpACK))
					if again.Dst != f.Dst {
						t.Fatalf("flow %d moved from %s to %s", sport, f.Dst, again.Dst)
					}
				}
			}
			if len(picked) != 3 {
				t.Errorf("60 flows used backends %v, want all 3", picked)
			}
		})
	}
}

func TestLBReplyReverseNAT(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	e.services(svc("UDP", vip+":53", 0, podFar+":5353"))
	ret, f, _ := e.run(e.o.FromContainer, udpPkt(podA, vip, 5000, 53))
	check(t, "request", ret, tcOK, f, flow{Src: podA, Dst: podFar, SPort: 5000, DPort: 5353, Proto: protoUDP})

	// the reply of the remote backend arrives on the node's device
	ret, f, _ = e.run(e.o.FromNetdev, udpPkt(podFar, podA, 5353, 5000))
	check(t, "reply", ret, tcOK, f, flow{Src: vip, Dst: podA, SPort: 53, DPort: 5000, Proto: protoUDP})

	// a local backend's reply leaves its own veth
	e.services(svc("TCP", vip+":80", 0, podLocal+":8080"))
	ret, f, _ = e.run(e.o.FromContainer, tcpPkt(podA, vip, 41000, 80, tcpSYN))
	check(t, "request", ret, tcOK, f, flow{Src: podA, Dst: podLocal, SPort: 41000, DPort: 8080, Proto: protoTCP, TCPFlags: tcpSYN})
	ret, f, _ = e.run(e.o.FromContainer, tcpPkt(podLocal, podA, 8080, 41000, tcpSYN|tcpACK))
	check(t, "reply", ret, tcOK, f, flow{Src: vip, Dst: podA, SPort: 80, DPort: 41000, Proto: protoTCP, TCPFlags: tcpSYN | tcpACK})

	// unrelated traffic is untouched
	ret, f, _ = e.run(e.o.FromContainer, tcpPkt(podLocal, podA, 8080, 41001, tcpACK))
	check(t, "unrelated", ret, tcOK, f, flow{Src: podLocal, Dst: podA, SPort: 8080, DPort: 41001, Proto: protoTCP, TCPFlags: tcpACK})
}

func TestLBNoBackends(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	e.services(svc("TCP", vip+":80", 0), svc("UDP", vip+":53", 0))

	ret, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, 40000, 80, tcpSYN))
	// RST|ACK from the VIP back to the client, acking SYN + 5 bytes
	check(t, "tcp syn", ret, tcRedirect, f, flow{Src: vip, Dst: podA, SPort: 80, DPort: 40000, Proto: protoTCP,
		TCPFlags: tcpRST | tcpACK, TCPAck: 1000 + 5 + 1})
	if got := e.metric(maps.MetricRejectRST); got != 1 {
		t.Errorf("reject-rst counter %d, want 1", got)
	}

	ret, _, _ = e.run(e.o.FromContainer, udpPkt(podA, vip, 5000, 53))
	if ret != tcShot {
		t.Errorf("udp: verdict %d, want drop", ret)
	}
	if got := e.metric(maps.MetricDropNoBackend); got != 1 {
		t.Errorf("drop-no-backend counter %d, want 1", got)
	}
}

func TestLBHairpin(t *testing.T) {
	e := newEnv(t, FlagKPR, false)
	e.services(svc("TCP", vip+":80", 0, podA+":8080"))
	ret, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, 40000, 80, tcpSYN))
	check(t, "request", ret, tcOK, f, flow{Src: "169.254.42.1", Dst: podA, SPort: 40000, DPort: 8080, Proto: protoTCP, TCPFlags: tcpSYN})
	ret, f, _ = e.run(e.o.FromContainer, tcpPkt(podA, "169.254.42.1", 8080, 40000, tcpSYN|tcpACK))
	check(t, "reply", ret, tcOK, f, flow{Src: vip, Dst: podA, SPort: 80, DPort: 40000, Proto: protoTCP, TCPFlags: tcpSYN | tcpACK})
}

func TestLBBackendRemoval(t *testing.T) {
	for _, viaUpdate := range []bool{false, true} {
		t.Run(map[bool]string{false: "sync", true: "update"}[viaUpdate], func(t *testing.T) {
			e := newEnv(t, FlagKPR, false)
			e.viaUpdate = viaUpdate
			testLBBackendRemoval(t, e)
		})
	}
}

func testLBBackendRemoval(t *testing.T, e *env) {
	e.services(svc("TCP", vip+":80", 0, podLocal+":8080", podFar+":8080"))
	flows := map[uint16]string{}
	for sport := uint16(40000); sport < 40040; sport++ {
		_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpSYN))
		flows[sport] = f.Dst
	}
	e.services(svc("TCP", vip+":80", 0, podLocal+":8080"))
	for sport, dst := range flows {
		_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpACK))
		if dst == podLocal && f.Dst != podLocal {
			t.Errorf("flow %d to a remaining backend moved to %s", sport, f.Dst)
		}
		if f.Dst == podFar {
			t.Errorf("flow %d still goes to the removed backend", sport)
		}
	}
	for sport := uint16(41000); sport < 41020; sport++ {
		_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, sport, 80, tcpSYN))
		if f.Dst != podLocal {
			t.Errorf("new flow went to %s", f.Dst)
		}
	}
}

func TestHostRoutingLocalDelivery(t *testing.T) {
	e := newEnv(t, FlagKPR|FlagHostRouting|FlagMasquerade, false)
	e.endpoint(podLocal, 42)
	ret, f, out := e.run(e.o.FromContainer, tcpPkt(podA, podLocal, 40000, 8080, tcpSYN))
	check(t, "pod to pod", ret, tcRedirect, f, flow{Src: podA, Dst: podLocal, SPort: 40000, DPort: 8080, Proto: protoTCP, TCPFlags: tcpSYN})
	if d := cmp.Diff([]byte{0x02, 0xee, 0, 0, 0, 42, 0x02, 0xaa, 0, 0, 0, 42}, out[:12]); d != "" {
		t.Errorf("MACs (-want +got):\n%s", d)
	}
	// from the node's device too
	ret, _, _ = e.run(e.o.FromNetdev, tcpPkt(podFar, podLocal, 40000, 8080, tcpSYN))
	if ret != tcRedirect {
		t.Errorf("netdev to pod: verdict %d, want redirect", ret)
	}
}

func TestLBSessionAffinity(t *testing.T) {
	for _, tc := range []struct {
		name              string
		maglev, viaUpdate bool
	}{{"random", false, false}, {"maglev", true, false}, {"random-update", false, true}, {"maglev-update", true, true}} {
		maglev := tc.maglev
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, FlagKPR, maglev)
			e.viaUpdate = tc.viaUpdate
			backends := []string{"198.19.1.21:8080", "198.19.1.22:8080", "198.19.1.23:8080", "198.19.1.24:8080"}
			web := svc("TCP", vip+":80", 0, backends...)

			// without affinity, new connections of one client spread
			e.services(web)
			seen := map[string]bool{}
			for port := uint16(41000); port < 41040; port++ {
				_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, port, 80, tcpSYN))
				seen[f.Dst] = true
			}
			if len(seen) < 2 {
				t.Fatalf("40 connections without affinity all went to %v", seen)
			}

			// with it, every new connection of a client goes where its first went
			web.SessionAffinity = true
			e.services(web)
			_, first, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, 42000, 80, tcpSYN))
			for port := uint16(42001); port < 42040; port++ {
				_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, port, 80, tcpSYN))
				if f.Dst != first.Dst {
					t.Fatalf("connection from port %d went to %s, the client's first to %s", port, f.Dst, first.Dst)
				}
			}

			// its backend leaves (terminating): the client gets another,
			// and keeps that one
			for i := range web.Backends {
				if web.Backends[i].Addr.Addr().String() == first.Dst {
					web.Backends[i].Terminating = true
				}
			}
			e.services(web)
			_, second, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, 43000, 80, tcpSYN))
			if second.Dst == first.Dst {
				t.Fatalf("new connection went to terminating backend %s", second.Dst)
			}
			for port := uint16(43001); port < 43020; port++ {
				_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, port, 80, tcpSYN))
				if f.Dst != second.Dst {
					t.Fatalf("connection from port %d went to %s, want %s", port, f.Dst, second.Dst)
				}
			}
			// the established flow to the terminating backend stays there
			_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, vip, 42000, 80, tcpACK))
			if f.Dst != first.Dst {
				t.Errorf("established flow moved from %s to %s", first.Dst, f.Dst)
			}

			// affinity off again: its entries go
			web.SessionAffinity = false
			e.services(web)
			entries, err := maps.NewAffinity(e.o.Maps[maps.NameAffinity]).List()
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 0 {
				t.Errorf("affinity entries left after turning it off: %v", entries)
			}
		})
	}
}
