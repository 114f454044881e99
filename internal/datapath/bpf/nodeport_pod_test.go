package bpf

import (
	"context"
	"net/netip"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

const otherNodeIP = "198.18.0.12"

// A pod reaching a NodePort on its own node's address, or on another
// node's, is load-balanced by from_container as a ClusterIP flow is: DNAT
// to the backend, the pod's address kept, the reply reverse-translated.
func TestNodePortFromPod(t *testing.T) {
	type step struct {
		name    string
		prog    string // from_container or from_netdev
		pkt     []byte
		wantRet uint32
		want    flow
	}
	syn, synAck, ack := uint8(tcpSYN), uint8(tcpSYN|tcpACK), uint8(tcpACK)
	for _, tc := range []struct {
		name   string
		flags  uint32
		maglev bool
		steps  []step
	}{
		{
			name: "local backend", flags: FlagKPR,
			steps: []step{
				{"request", "from_container", tcpPkt(podA, nodeIP, 40000, 30080, syn), tcOK,
					flow{Src: podA, Dst: podLocal, SPort: 40000, DPort: 8080, Proto: protoTCP, TCPFlags: syn}},
				{"reply", "from_container", tcpPkt(podLocal, podA, 8080, 40000, synAck), tcRedirect,
					flow{Src: nodeIP, Dst: podA, SPort: 30080, DPort: 40000, Proto: protoTCP, TCPFlags: synAck}},
				{"established", "from_container", tcpPkt(podA, nodeIP, 40000, 30080, ack), tcOK,
					flow{Src: podA, Dst: podLocal, SPort: 40000, DPort: 8080, Proto: protoTCP, TCPFlags: ack}},
			},
		},
		{
			// with BPF host routing the request too is redirected
			// into the backend pod
			name: "local backend, BPF host routing", flags: FlagKPR | FlagHostRouting | FlagMasquerade,
			steps: []step{
				{"request", "from_container", tcpPkt(podA, nodeIP, 40000, 30080, syn), tcRedirect,
					flow{Src: podA, Dst: podLocal, SPort: 40000, DPort: 8080, Proto: protoTCP, TCPFlags: syn}},
				{"reply", "from_container", tcpPkt(podLocal, podA, 8080, 40000, synAck), tcRedirect,
					flow{Src: nodeIP, Dst: podA, SPort: 30080, DPort: 40000, Proto: protoTCP, TCPFlags: synAck}},
			},
		},
		{
			name: "remote backend", flags: FlagKPR, maglev: true,
			steps: []step{
				{"request", "from_container", tcpPkt(podA, nodeIP, 40001, 30081, syn), tcOK,
					flow{Src: podA, Dst: podFar, SPort: 40001, DPort: 8080, Proto: protoTCP, TCPFlags: syn}},
				// the backend's reply arrives on the node's device
				{"reply", "from_netdev", tcpPkt(podFar, podA, 8080, 40001, synAck), tcRedirect,
					flow{Src: nodeIP, Dst: podA, SPort: 30081, DPort: 40001, Proto: protoTCP, TCPFlags: synAck}},
			},
		},
		{
			name: "remote backend, UDP", flags: FlagKPR,
			steps: []step{
				{"request", "from_container", udpPkt(podA, nodeIP, 5000, 30053), tcOK,
					flow{Src: podA, Dst: podFar, SPort: 5000, DPort: 5353, Proto: protoUDP}},
				{"reply", "from_netdev", udpPkt(podFar, podA, 5353, 5000), tcRedirect,
					flow{Src: nodeIP, Dst: podA, SPort: 30053, DPort: 5000, Proto: protoUDP}},
			},
		},
		{
			name: "another node's address", flags: FlagKPR,
			steps: []step{
				{"request", "from_container", tcpPkt(podA, otherNodeIP, 40002, 30080, syn), tcOK,
					flow{Src: podA, Dst: podLocal, SPort: 40002, DPort: 8080, Proto: protoTCP, TCPFlags: syn}},
				{"reply", "from_container", tcpPkt(podLocal, podA, 8080, 40002, synAck), tcRedirect,
					flow{Src: otherNodeIP, Dst: podA, SPort: 30080, DPort: 40002, Proto: protoTCP, TCPFlags: synAck}},
			},
		},
		{
			name: "hairpin", flags: FlagKPR,
			steps: []step{
				{"request", "from_container", tcpPkt(podLocal, nodeIP, 40003, 30080, syn), tcRedirect,
					flow{Src: "169.254.42.1", Dst: podLocal, SPort: 40003, DPort: 8080, Proto: protoTCP, TCPFlags: syn}},
				{"reply", "from_container", tcpPkt(podLocal, "169.254.42.1", 8080, 40003, synAck), tcRedirect,
					flow{Src: nodeIP, Dst: podLocal, SPort: 30080, DPort: 40003, Proto: protoTCP, TCPFlags: synAck}},
			},
		},
		{
			name: "no backend", flags: FlagKPR,
			steps: []step{
				{"tcp syn", "from_container", tcpPkt(podA, nodeIP, 40004, 30082, syn), tcRedirect,
					flow{Src: nodeIP, Dst: podA, SPort: 30082, DPort: 40004, Proto: protoTCP, TCPFlags: tcpRST | tcpACK, TCPAck: 1006}},
			},
		},
		{
			name: "not translated", flags: FlagKPR,
			steps: []step{
				// a port of the node that is no NodePort
				{"other port", "from_container", tcpPkt(podA, nodeIP, 40005, 22, syn), tcOK,
					flow{Src: podA, Dst: nodeIP, SPort: 40005, DPort: 22, Proto: protoTCP, TCPFlags: syn}},
				// an address that is no node's
				{"not a node", "from_container", tcpPkt(podA, "198.18.0.99", 40005, 30080, syn), tcOK,
					flow{Src: podA, Dst: "198.18.0.99", SPort: 40005, DPort: 30080, Proto: protoTCP, TCPFlags: syn}},
				// a pod answering a node process that bound a port
				// which is also a NodePort opens no Service flow
				{"reply to a node client", "from_container", tcpPkt(podA, nodeIP, 8080, 30080, synAck), tcOK,
					flow{Src: podA, Dst: nodeIP, SPort: 8080, DPort: 30080, Proto: protoTCP, TCPFlags: synAck}},
			},
		},
		{
			name: "without kube-proxy replacement", flags: FlagMasquerade,
			steps: []step{
				{"request", "from_container", tcpPkt(podA, nodeIP, 40006, 30080, syn), tcOK,
					flow{Src: podA, Dst: nodeIP, SPort: 40006, DPort: 30080, Proto: protoTCP, TCPFlags: syn}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.flags, tc.maglev)
			// translated replies are forwarded by the programs
			// (redirected into the client pod) in every mode
			e.endpoint(podLocal, 42)
			e.endpoint(podA, 43)
			nodes := maps.NewNodeIPs(e.o.Maps[maps.NameNodeIPs])
			if err := nodes.Update(netip.MustParseAddr(otherNodeIP), maps.NodeValue{}); err != nil {
				t.Fatal(err)
			}
			e.services(
				svc("TCP", vip+":80", 30080, podLocal+":8080"),
				svc("TCP", "198.18.128.11:80", 30081, podFar+":8080"),
				svc("UDP", "198.18.128.12:53", 30053, podFar+":5353"),
				svc("TCP", "198.18.128.13:80", 30082),
			)
			for _, s := range tc.steps {
				prog := e.o.FromContainer
				if s.prog == "from_netdev" {
					prog = e.o.FromNetdev
				}
				ret, f, _ := e.run(prog, s.pkt)
				check(t, s.name, ret, s.wantRet, f, s.want)
			}
		})
	}
}

// Backend selection for pods reaching a NodePort is the Service's: every
// backend gets flows, and with session affinity a client keeps its
// backend.
func TestNodePortFromPodSelection(t *testing.T) {
	for _, maglev := range []bool{false, true} {
		t.Run(map[bool]string{false: "random", true: "maglev"}[maglev], func(t *testing.T) {
			e := newEnv(t, FlagKPR, maglev)
			web := svc("TCP", vip+":80", 30080, "198.19.1.21:8080", "198.19.1.22:8080", "198.19.1.23:8080")
			e.services(web)
			seen := map[string]bool{}
			for port := uint16(41000); port < 41060; port++ {
				_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, nodeIP, port, 30080, tcpSYN))
				seen[f.Dst] = true
			}
			if len(seen) != 3 {
				t.Errorf("60 flows went to %v, want all 3 backends", seen)
			}

			web.SessionAffinity = true
			e.services(web)
			_, first, _ := e.run(e.o.FromContainer, tcpPkt(podA, nodeIP, 42000, 30080, tcpSYN))
			for port := uint16(42001); port < 42030; port++ {
				_, f, _ := e.run(e.o.FromContainer, tcpPkt(podA, nodeIP, port, 30080, tcpSYN))
				if f.Dst != first.Dst {
					t.Fatalf("connection from port %d went to %s, the client's first to %s", port, f.Dst, first.Dst)
				}
			}
		})
	}
}

// glia_node_ips follows the nodes table: this node's address (flagged
// local) and every other node's; a prune removes what no node has, an old
// address of this node included.
func TestNodeIPs(t *testing.T) {
	o := loadTest(t, FlagKPR)
	d := &Datapath{node: datapath.LocalNode{IP: netip.MustParseAddr(nodeIP)}, objs: o, opts: testOpts{RoutingMode: "native"}.options(),
		nodeIPs: maps.NewNodeIPs(o.Maps[maps.NameNodeIPs]), tunnel: maps.NewTunnel(o.Maps[maps.NameTunnel])}
	list := func() []string {
		t.Helper()
		es, err := d.nodeIPs.List()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.String())
		}
		sort.Strings(out)
		return out
	}
	self := &state.Node{Name: "self", IP: netip.MustParseAddr(nodeIP), Local: true}
	remote := func(ips ...string) []*state.Node {
		out := []*state.Node{self}
		for _, ip := range ips {
			out = append(out, &state.Node{Name: ip, IP: netip.MustParseAddr(ip)})
		}
		return out
	}
	must(t, d.nodeIPs.Update(netip.MustParseAddr("198.18.0.50"), maps.NodeValue{Flags: maps.NodeFlagLocal})) // an old address of ours
	ctx := context.Background()
	for _, step := range []struct {
		name  string
		nodes []*state.Node
		want  []string
	}{
		{"two others", remote("198.18.0.12", "198.18.0.13"), []string{"198.18.0.11     local", "198.18.0.12", "198.18.0.13"}},
		{"again: nothing changes", remote("198.18.0.13", "198.18.0.12"), []string{"198.18.0.11     local", "198.18.0.12", "198.18.0.13"}},
		{"one left", remote("198.18.0.13"), []string{"198.18.0.11     local", "198.18.0.13"}},
	} {
		must(t, syncNodes(ctx, d, step.nodes...))
		if diff := cmp.Diff(step.want, list()); diff != "" {
			t.Errorf("%s: node addresses (-want +got):\n%s", step.name, diff)
		}
	}
}
