package policy

import (
	"fmt"
	"net/netip"
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	"glia.dev/glia/internal/state"
)

func sel(t *testing.T, s string) *state.Selector {
	t.Helper()
	l, err := labels.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return &state.Selector{Selector: l, Text: s}
}

var (
	n1      = netip.MustParseAddr("198.18.0.11")
	n2      = netip.MustParseAddr("198.18.0.12")
	srvIP   = netip.MustParseAddr("198.19.1.10")
	aIP     = netip.MustParseAddr("198.19.1.11")
	bIP     = netip.MustParseAddr("198.19.2.12")
	worldIP = netip.MustParseAddr("198.18.64.10")
)

func input(local string, policies ...*state.NetworkPolicy) Input {
	return Input{
		LocalNode:  local,
		Nodes:      []*state.Node{{Name: "n1", IP: n1}, {Name: "n2", IP: n2}},
		Namespaces: []*state.Namespace{{Name: "ns", Labels: map[string]string{"team": "x"}}, {Name: "other", Labels: map[string]string{}}},
		Pods: []*state.Pod{
			{Namespace: "ns", Name: "server", Labels: map[string]string{"app": "server"}, IP: srvIP, NodeName: "n1",
				Ports: []state.NamedPort{{Name: "http", Protocol: "TCP", Port: 8080}}},
			{Namespace: "ns", Name: "a", Labels: map[string]string{"app": "a"}, IP: aIP, NodeName: "n1"},
			{Namespace: "other", Name: "b", Labels: map[string]string{"app": "b"}, IP: bIP, NodeName: "n2"},
		},
		Endpoints: []*state.Endpoint{
			{IP: srvIP, PodNamespace: "ns", PodName: "server"},
			{IP: aIP, PodNamespace: "ns", PodName: "a"},
		},
		Policies: policies,
	}
}

// TestTrace: verdicts of the computed policy for the cases upstream
// specifies, each with the direction that decides.
func TestTrace(t *testing.T) {
	ingress := func(name string, rules ...state.PolicyRule) *state.NetworkPolicy {
		p := &state.NetworkPolicy{Name: state.PolicyName{Namespace: "ns", Name: name}, Pods: *sel(t, "app=server"), Ingress: rules}
		p.Isolates.Ingress = true
		return p
	}
	egressOnly := &state.NetworkPolicy{Name: state.PolicyName{Namespace: "ns", Name: "egress-only"}, Pods: *sel(t, "app=server")}
	egressOnly.Isolates.Egress = true
	otherNS := &state.NetworkPolicy{Name: state.PolicyName{Namespace: "other", Name: "deny"}, Pods: *sel(t, "")}
	otherNS.Isolates.Ingress = true
	type probe struct {
		from, to netip.Addr
		proto    uint8
		port     uint16
		allowed  bool
	}
	tests := []struct {
		name     string
		policies []*state.NetworkPolicy
		probes   []probe
	}{
		{"no policy allows all", nil, []probe{{aIP, srvIP, 6, 80, true}, {bIP, srvIP, 17, 53, true}}},
		{"deny-all ingress", []*state.NetworkPolicy{ingress("deny")}, []probe{
			{aIP, srvIP, 6, 80, false}, {bIP, srvIP, 6, 80, false},
			{n1, srvIP, 6, 8080, true}, // its own node (kubelet probes)
			{n2, srvIP, 6, 8080, false},
			{srvIP, aIP, 6, 80, true}, // the server's egress is not isolated
		}},
		{"egress-only policy leaves ingress open", []*state.NetworkPolicy{egressOnly}, []probe{
			{aIP, srvIP, 6, 80, true}, {srvIP, aIP, 6, 80, false}, {srvIP, n1, 6, 10250, true},
		}},
		{"a policy of another namespace does not select", []*state.NetworkPolicy{otherNS}, []probe{{aIP, srvIP, 6, 80, true}}},
		{"pod selector and port", []*state.NetworkPolicy{ingress("allow-a", state.PolicyRule{
			Peers: []state.Peer{{Pods: sel(t, "app=a")}}, Ports: []state.PolicyPort{{Protocol: "TCP", Port: 80}}})}, []probe{
			{aIP, srvIP, 6, 80, true}, {aIP, srvIP, 6, 81, false}, {aIP, srvIP, 17, 80, false}, {bIP, srvIP, 6, 80, false},
		}},
		{"namespace selector", []*state.NetworkPolicy{ingress("team-x", state.PolicyRule{
			Peers: []state.Peer{{Namespaces: sel(t, "team=x")}}})}, []probe{{aIP, srvIP, 6, 1, true}, {bIP, srvIP, 6, 1, false}}},
		{"named port resolved on the destination", []*state.NetworkPolicy{ingress("named", state.PolicyRule{
			Ports: []state.PolicyPort{{Protocol: "TCP", Name: "http"}}})}, []probe{{bIP, srvIP, 6, 8080, true}, {bIP, srvIP, 6, 80, false}}},
		{"endPort range", []*state.NetworkPolicy{ingress("range", state.PolicyRule{
			Ports: []state.PolicyPort{{Protocol: "TCP", Port: 8000, EndPort: 8010}}})}, []probe{
			{bIP, srvIP, 6, 8000, true}, {bIP, srvIP, 6, 8010, true}, {bIP, srvIP, 6, 8011, false}, {bIP, srvIP, 6, 7999, false},
		}},
		{"ipBlock with except", []*state.NetworkPolicy{ingress("cidr", state.PolicyRule{Peers: []state.Peer{{IPBlock: &state.IPBlock{
			CIDR: netip.MustParsePrefix("198.18.64.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("198.18.64.10/32")}}}}})}, []probe{
			{netip.MustParseAddr("198.18.64.20"), srvIP, 6, 80, true}, {worldIP, srvIP, 6, 80, false}, {aIP, srvIP, 6, 80, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Compute(input("n1", tt.policies...))
			for _, p := range tt.probes {
				v, err := r.Trace(Peer{Addr: p.from}, Peer{Addr: p.to}, p.proto, p.port)
				if err != nil {
					t.Fatalf("trace %s → %s: %v", p.from, p.to, err)
				}
				if v.Allowed != p.allowed {
					t.Errorf("%s → %s %d/%s: allowed=%t, want %t\n%v", p.from, p.to, p.port, ProtoName(p.proto), v.Allowed, p.allowed, v.Lines())
				}
			}
		})
	}
}

// TestIdentitiesSameOnEveryNode: two nodes compute the same numbers for
// the same cluster.
func TestIdentitiesSameOnEveryNode(t *testing.T) {
	allow := &state.NetworkPolicy{Name: state.PolicyName{Namespace: "ns", Name: "p"}, Pods: *sel(t, "app=server"),
		Ingress: []state.PolicyRule{{Peers: []state.Peer{{IPBlock: &state.IPBlock{CIDR: netip.MustParsePrefix("198.18.64.0/24")}}}}}}
	allow.Isolates.Ingress = true
	r1, r2 := Compute(input("n1", allow)), Compute(input("n2", allow))
	k1, k2 := map[string]uint32{}, map[string]uint32{}
	for id, i := range r1.Identities {
		if i.Kind == KindPod || i.Kind == KindCIDR {
			k1[i.Key()] = id
		}
	}
	for id, i := range r2.Identities {
		if i.Kind == KindPod || i.Kind == KindCIDR {
			k2[i.Key()] = id
		}
	}
	if len(k1) == 0 || fmt.Sprint(k1) != fmt.Sprint(k2) {
		t.Fatalf("identities differ between nodes:\nn1 %v\nn2 %v", k1, k2)
	}
}

// TestMapsGrowWithIdentitiesNotPods: a thousand replicas of one template
// add no identity and no policy entry.
func TestMapsGrowWithIdentitiesNotPods(t *testing.T) {
	allow := &state.NetworkPolicy{Name: state.PolicyName{Namespace: "ns", Name: "p"}, Pods: *sel(t, "app=server"),
		Ingress: []state.PolicyRule{{Peers: []state.Peer{{Pods: sel(t, "app=a")}}, Ports: []state.PolicyPort{{Protocol: "TCP", Port: 80}}}}}
	allow.Isolates.Ingress = true
	small := Compute(input("n1", allow))
	in := input("n1", allow)
	for i := range 1000 {
		in.Pods = append(in.Pods, &state.Pod{Namespace: "ns", Name: fmt.Sprintf("a-%d", i), Labels: map[string]string{"app": "a"},
			IP: netip.AddrFrom4([4]byte{198, 19, 3 + byte(i/250), byte(1 + i%250)}), NodeName: "n2"})
	}
	big := Compute(in)
	if len(big.Identities) != len(small.Identities) || len(big.Entries) != len(small.Entries) {
		t.Fatalf("1000 more replicas: identities %d → %d, policy entries %d → %d; want no growth",
			len(small.Identities), len(big.Identities), len(small.Entries), len(big.Entries))
	}
	if len(big.IPCache) != len(small.IPCache)+1000 {
		t.Fatalf("ipcache %d → %d, want one entry per pod address", len(small.IPCache), len(big.IPCache))
	}
}
