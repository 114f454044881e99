package policydp

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"k8s.io/apimachinery/pkg/labels"

	"glia.dev/glia/internal/policy"
	"glia.dev/glia/internal/state"
)

const (
	actOK   = 0
	actShot = 2
)

func skipUnlessRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF programs)")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Skipf("memlock: %v", err)
	}
}

// testUnit is a Unit on fresh, unpinned maps with its programs loaded.
func testUnit(t *testing.T) *Unit {
	t.Helper()
	spec, err := LoadToContainer()
	if err != nil {
		t.Fatal(err)
	}
	u := &Unit{log: slog.New(slog.NewTextHandler(io.Discard, nil)), maps: map[string]*ebpf.Map{}, progs: map[string]*ebpf.Program{}}
	for _, name := range []string{MapIPCache, MapPolicy, MapEP, MapCT, MapState, MapDrops} {
		ms := spec.Maps[name].Copy()
		ms.Pinning = ebpf.PinNone
		m, err := ebpf.NewMap(ms)
		if err != nil {
			t.Fatalf("map %s: %v", name, err)
		}
		u.maps[name] = m
	}
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){
		ProgToContainer: LoadToContainer, ProgFromCtr: LoadPolFromCtr, ProgToNetdev: LoadPolToNetdev,
	} {
		s, err := load()
		if err != nil {
			t.Fatal(err)
		}
		coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: u.maps})
		if err != nil {
			var verr *ebpf.VerifierError
			if ok := asVerifier(err, &verr); ok {
				t.Fatalf("load %s: %+v", name, verr)
			}
			t.Fatalf("load %s: %v", name, err)
		}
		u.progs[name] = coll.DetachProgram(name)
		coll.Close()
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func asVerifier(err error, v **ebpf.VerifierError) bool {
	ve, ok := err.(*ebpf.VerifierError)
	if ok {
		*v = ve
	}
	return ok
}

// program writes a computed policy into the unit's maps through the
// reconciler operations the agent runs, then turns enforcement on.
func program(t *testing.T, u *Unit, r *policy.Result, nodes []netip.Addr) {
	t.Helper()
	ctx := context.Background()
	isNode := func(a netip.Addr) bool {
		for _, n := range nodes {
			if n == a {
				return true
			}
		}
		return false
	}
	for _, e := range r.IPCache {
		if err := (IPCacheOps{U: u, IsNode: isNode}).Update(ctx, nil, 0, e); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range r.Entries {
		if err := (PolicyOps{U: u}).Update(ctx, nil, 0, e); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range r.Endpoints {
		// No interface in this test: the map entry only.
		e = e.Clone()
		e.HostIfName = ""
		if err := (EndpointOps{U: u}).Update(ctx, nil, 0, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.SetReady(); err != nil {
		t.Fatal(err)
	}
}

// packet is an Ethernet + IPv4 + TCP/UDP/ICMP frame.
func packet(src, dst netip.Addr, proto uint8, sport, dport uint16) []byte {
	l4 := make([]byte, 20)
	switch proto {
	case 6:
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		l4[12] = 0x50
		l4[13] = 0x02 // SYN
	case 17, 132:
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
		l4 = l4[:12]
	case 1:
		l4[0] = 8 // echo request
		binary.BigEndian.PutUint16(l4[4:], sport)
		l4 = l4[:8]
	}
	pkt := make([]byte, 14+20+len(l4))
	binary.BigEndian.PutUint16(pkt[12:], 0x0800)
	ip := pkt[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	ip[8] = 64
	ip[9] = proto
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	copy(ip[20:], l4)
	return pkt
}

func run(t *testing.T, prog *ebpf.Program, pkt []byte) uint32 {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: pkt})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return ret
}

func sel(t *testing.T, s string) *state.Selector {
	t.Helper()
	l, err := labels.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return &state.Selector{Selector: l, Text: s}
}

var (
	node1   = netip.MustParseAddr("198.18.0.11")
	node2   = netip.MustParseAddr("198.18.0.12")
	server  = netip.MustParseAddr("198.19.1.10")
	clientA = netip.MustParseAddr("198.19.1.11")
	clientB = netip.MustParseAddr("198.19.2.12")
	outside = netip.MustParseAddr("198.18.64.10")
	other   = netip.MustParseAddr("198.18.64.20")
)

func cluster(policies ...*state.NetworkPolicy) policy.Input {
	return policy.Input{
		LocalNode:  "n1",
		Nodes:      []*state.Node{{Name: "n1", IP: node1}, {Name: "n2", IP: node2}},
		Namespaces: []*state.Namespace{{Name: "ns", Labels: map[string]string{"team": "x"}}, {Name: "other", Labels: map[string]string{}}},
		Pods: []*state.Pod{
			{Namespace: "ns", Name: "server", Labels: map[string]string{"app": "server"}, IP: server, NodeName: "n1",
				Ports: []state.NamedPort{{Name: "http", Protocol: "TCP", Port: 8080}}},
			{Namespace: "ns", Name: "a", Labels: map[string]string{"app": "a"}, IP: clientA, NodeName: "n1"},
			{Namespace: "other", Name: "b", Labels: map[string]string{"app": "b"}, IP: clientB, NodeName: "n2"},
		},
		Endpoints: []*state.Endpoint{
			{IP: server, PodNamespace: "ns", PodName: "server", HostIfName: "glserver"},
			{IP: clientA, PodNamespace: "ns", PodName: "a", HostIfName: "gla"},
		},
		Policies: policies,
	}
}

func ingressPolicy(t *testing.T, name string, rules ...state.PolicyRule) *state.NetworkPolicy {
	p := &state.NetworkPolicy{Name: state.PolicyName{Namespace: "ns", Name: name}, Pods: *sel(t, "app=server"), Ingress: rules}
	p.Isolates.Ingress = true
	return p
}

// TestPrivilegedPolicyDecisions runs the policy programs on crafted
// packets against maps written from computed policies.
func TestPrivilegedPolicyDecisions(t *testing.T) {
	skipUnlessRoot(t)
	type probe struct {
		name     string
		prog     string // to_container (ingress of the destination) or pol_from_ctr (egress of the source)
		src, dst netip.Addr
		proto    uint8
		sport    uint16
		dport    uint16
		want     uint32
	}
	egressA := func(rules ...state.PolicyRule) *state.NetworkPolicy {
		p := &state.NetworkPolicy{Name: state.PolicyName{Namespace: "ns", Name: "a-egress"}, Pods: *sel(t, "app=a"), Egress: rules}
		p.Isolates.Egress = true
		return p
	}
	tests := []struct {
		name     string
		policies []*state.NetworkPolicy
		probes   []probe
	}{{
		name:     "no policy: everything allowed",
		policies: nil,
		probes: []probe{
			{"from a", ProgToContainer, clientA, server, 6, 40000, 80, actOK},
			{"from outside", ProgToContainer, outside, server, 17, 40000, 53, actOK},
		},
	}, {
		name: "allow from app=a on TCP 80, deny the rest",
		policies: []*state.NetworkPolicy{ingressPolicy(t, "allow-a", state.PolicyRule{
			Peers: []state.Peer{{Pods: sel(t, "app=a")}}, Ports: []state.PolicyPort{{Protocol: "TCP", Port: 80}}})},
		probes: []probe{
			{"a on 80", ProgToContainer, clientA, server, 6, 40001, 80, actOK},
			{"a on 81", ProgToContainer, clientA, server, 6, 40002, 81, actShot},
			{"a on UDP 80", ProgToContainer, clientA, server, 17, 40003, 80, actShot},
			{"b (other namespace) on 80", ProgToContainer, clientB, server, 6, 40004, 80, actShot},
			{"the node itself (kubelet probes)", ProgToContainer, node1, server, 6, 40005, 8080, actOK},
			{"the other node", ProgToContainer, node2, server, 6, 40006, 80, actShot},
			{"unknown identity (world)", ProgToContainer, netip.MustParseAddr("10.99.0.1"), server, 6, 40007, 80, actShot},
			{"a, not isolated, sends anywhere", ProgFromCtr, clientA, outside, 6, 40008, 443, actOK},
		},
	}, {
		name: "reply traffic of an allowed flow passes a deny-all egress",
		policies: []*state.NetworkPolicy{func() *state.NetworkPolicy {
			p := ingressPolicy(t, "in-and-deny-egress", state.PolicyRule{Peers: []state.Peer{{Pods: sel(t, "app=a")}}})
			p.Isolates.Egress = true
			return p
		}()},
		probes: []probe{
			{"a opens", ProgToContainer, clientA, server, 6, 40010, 80, actOK},
			{"server replies", ProgFromCtr, server, clientA, 6, 80, 40010, actOK},
			{"server opens to a", ProgFromCtr, server, clientA, 6, 80, 40011, actShot},
			{"server opens anywhere", ProgFromCtr, server, outside, 17, 5353, 53, actShot},
			{"server to its own node", ProgFromCtr, server, node1, 6, 40012, 10250, actOK},
		},
	}, {
		name: "egress to a CIDR with an exception",
		policies: []*state.NetworkPolicy{egressA(state.PolicyRule{Peers: []state.Peer{{IPBlock: &state.IPBlock{
			CIDR: netip.MustParsePrefix("198.18.64.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("198.18.64.10/32")}}}}})},
		probes: []probe{
			{"inside the CIDR", ProgFromCtr, clientA, other, 6, 40020, 80, actOK},
			{"the exception", ProgFromCtr, clientA, outside, 6, 40021, 80, actShot},
			{"outside the CIDR", ProgFromCtr, clientA, netip.MustParseAddr("198.18.65.1"), 6, 40022, 80, actShot},
			{"a pod (not in the CIDR)", ProgFromCtr, clientA, server, 6, 40023, 80, actShot},
			{"the reply of the allowed flow", ProgToContainer, other, clientA, 6, 80, 40020, actOK},
		},
	}, {
		name: "ipBlock matches pod addresses too, with an exception",
		policies: []*state.NetworkPolicy{egressA(state.PolicyRule{Peers: []state.Peer{{IPBlock: &state.IPBlock{
			CIDR: netip.MustParsePrefix("198.19.0.0/16"), Except: []netip.Prefix{netip.MustParsePrefix("198.19.1.10/32")}}}}})},
		probes: []probe{
			{"pod b in the CIDR", ProgFromCtr, clientA, clientB, 6, 40030, 80, actOK},
			{"server, excepted", ProgFromCtr, clientA, server, 6, 40031, 80, actShot},
		},
	}, {
		name: "port ranges (endPort) from any peer",
		policies: []*state.NetworkPolicy{ingressPolicy(t, "range", state.PolicyRule{
			Ports: []state.PolicyPort{{Protocol: "TCP", Port: 8000, EndPort: 8090}, {Protocol: "UDP", Port: 53}}})},
		probes: []probe{
			{"8000", ProgToContainer, clientB, server, 6, 40040, 8000, actOK},
			{"8047", ProgToContainer, clientB, server, 6, 40041, 8047, actOK},
			{"8090", ProgToContainer, clientB, server, 6, 40042, 8090, actOK},
			{"8091", ProgToContainer, clientB, server, 6, 40043, 8091, actShot},
			{"7999", ProgToContainer, clientB, server, 6, 40044, 7999, actShot},
			{"UDP 53", ProgToContainer, outside, server, 17, 40045, 53, actOK},
			{"TCP 53", ProgToContainer, outside, server, 6, 40046, 53, actShot},
			{"ICMP: no port rule matches it", ProgToContainer, clientA, server, 1, 7, 0, actShot},
		},
	}, {
		name: "named port, resolved on the destination pod",
		policies: []*state.NetworkPolicy{ingressPolicy(t, "named", state.PolicyRule{
			Peers: []state.Peer{{Namespaces: sel(t, "")}}, Ports: []state.PolicyPort{{Protocol: "TCP", Name: "http"}}})},
		probes: []probe{
			{"8080 (http)", ProgToContainer, clientB, server, 6, 40050, 8080, actOK},
			{"80", ProgToContainer, clientB, server, 6, 40051, 80, actShot},
			{"from outside the cluster (not a pod)", ProgToContainer, outside, server, 6, 40052, 8080, actShot},
		},
	}, {
		name: "namespace selector",
		policies: []*state.NetworkPolicy{ingressPolicy(t, "from-team-x", state.PolicyRule{
			Peers: []state.Peer{{Namespaces: sel(t, "team=x")}}})},
		probes: []probe{
			{"a, in team x", ProgToContainer, clientA, server, 17, 40060, 53, actOK},
			{"b, not", ProgToContainer, clientB, server, 17, 40061, 53, actShot},
		},
	}, {
		name:     "deny all ingress",
		policies: []*state.NetworkPolicy{ingressPolicy(t, "deny-all")},
		probes: []probe{
			{"a", ProgToContainer, clientA, server, 6, 40070, 80, actShot},
			{"an endpoint the agent never gave a policy", ProgToContainer, clientA, netip.MustParseAddr("198.19.1.99"), 6, 40071, 80, actShot},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := testUnit(t)
			r := policy.Compute(cluster(tt.policies...))
			program(t, u, r, []netip.Addr{node1, node2})
			for _, p := range tt.probes {
				got := run(t, u.progs[p.prog], packet(p.src, p.dst, p.proto, p.sport, p.dport))
				if got != p.want {
					t.Errorf("%s: %s %s -> %s %d/%d: verdict %d, want %d", p.name, p.prog, p.src, p.dst, p.dport, p.proto, got, p.want)
				}
				// The explanation agrees with the datapath (egress of a
				// pod source, ingress of a pod destination).
				if p.proto == 6 || p.proto == 17 {
					v, err := r.Trace(policy.Peer{Addr: p.src}, policy.Peer{Addr: p.dst}, p.proto, p.dport)
					if err != nil {
						t.Fatal(err)
					}
					step := v.Ingress
					if p.prog == ProgFromCtr {
						step = v.Egress
					}
					isReply := p.name == "server replies" || p.name == "the reply of the allowed flow"
					if !isReply && r.Endpoints != nil && step.Allowed != (p.want == actOK) && p.name != "an endpoint the agent never gave a policy" {
						t.Errorf("%s: trace says allowed=%t (%s), the datapath %d", p.name, step.Allowed, step.Reason, got)
					}
				}
			}
		})
	}
}

// TestPrivilegedNotReady: before the agent computed the node's policy
// once, nothing is enforced (an upgraded node keeps its traffic).
func TestPrivilegedNotReady(t *testing.T) {
	skipUnlessRoot(t)
	u := testUnit(t)
	if got := run(t, u.progs[ProgToContainer], packet(clientA, server, 6, 1, 80)); got != actOK {
		t.Fatalf("not ready: verdict %d, want %d", got, actOK)
	}
	if err := u.SetReady(); err != nil {
		t.Fatal(err)
	}
	if got := run(t, u.progs[ProgToContainer], packet(clientA, server, 6, 1, 80)); got != actShot {
		t.Fatalf("ready, endpoint without a policy: verdict %d, want %d", got, actShot)
	}
}

// TestPrivilegedPolicyChangeDecidesAgain: a tracked, allowed flow is
// decided again after the policy changed.
func TestPrivilegedPolicyChangeDecidesAgain(t *testing.T) {
	skipUnlessRoot(t)
	u := testUnit(t)
	allow := ingressPolicy(t, "p", state.PolicyRule{Peers: []state.Peer{{Pods: sel(t, "app=a")}}})
	program(t, u, policy.Compute(cluster(allow)), []netip.Addr{node1, node2})
	pkt := packet(clientA, server, 6, 41000, 80)
	if got := run(t, u.progs[ProgToContainer], pkt); got != actOK {
		t.Fatalf("allowed flow: verdict %d", got)
	}
	// The policy now allows no one: the entries go, the flow is denied.
	deny := ingressPolicy(t, "p")
	r := policy.Compute(cluster(deny))
	ctx := context.Background()
	old := policy.Compute(cluster(allow))
	for _, e := range old.Entries {
		if err := (PolicyOps{U: u}).Delete(ctx, nil, 0, e); err != nil {
			t.Fatal(err)
		}
	}
	program(t, u, r, []netip.Addr{node1, node2})
	if got := run(t, u.progs[ProgToContainer], pkt); got != actShot {
		t.Fatalf("after the policy changed: verdict %d, want %d", got, actShot)
	}
	in, _, err := u.Drops()
	if err != nil || in == 0 {
		t.Fatalf("ingress drops counted: %d (%v)", in, err)
	}
}
