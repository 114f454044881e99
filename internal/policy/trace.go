package policy

import (
	"fmt"
	"net/netip"
	"strings"

	"glia.dev/glia/internal/state"
)

// Step is the verdict of one side of a connection: the source's egress
// or the destination's ingress.
type Step struct {
	Dir     string // "egress" or "ingress"
	Pod     string // the pod whose policy decides, "" when not a pod
	Allowed bool
	// Reason says why: the rule that allowed it, that no policy isolates
	// the pod, that the peer is the pod's own node, or that no rule of
	// the selecting policies allows it (naming them).
	Reason string
}

// Verdict is the answer of Trace.
type Verdict struct {
	From, To        string // as given, with the address
	FromID, ToID    string // the identities
	Proto           string
	Port            uint16
	Egress, Ingress Step
	Allowed         bool
}

// Lines renders the verdict for a person.
func (v Verdict) Lines() []string {
	word := "DENIED"
	if v.Allowed {
		word = "ALLOWED"
	}
	out := []string{
		fmt.Sprintf("From:    %s, identity %s", v.From, v.FromID),
		fmt.Sprintf("To:      %s, identity %s", v.To, v.ToID),
		fmt.Sprintf("Port:    %d/%s", v.Port, v.Proto),
	}
	for _, s := range []Step{v.Egress, v.Ingress} {
		w := "denied"
		if s.Allowed {
			w = "allowed"
		}
		who := s.Pod
		if who == "" {
			who = "-"
		}
		out = append(out, fmt.Sprintf("%-8s %s %s: %s", strings.ToUpper(s.Dir[:1])+s.Dir[1:]+":", who, w, s.Reason))
	}
	return append(out, "Verdict: "+word)
}

// Peer names one side of a trace: a pod ("namespace/name") or an address.
type Peer struct {
	Pod  string
	Addr netip.Addr
}

// resolve finds a peer's address and pod.
func (r *Result) resolve(p Peer) (netip.Addr, *state.Pod, error) {
	if p.Pod != "" {
		pod, ok := r.pods[p.Pod]
		if !ok {
			return netip.Addr{}, nil, fmt.Errorf("no pod %s in the cluster (give namespace/name, or an address)", p.Pod)
		}
		if !pod.IP.IsValid() {
			return netip.Addr{}, nil, fmt.Errorf("pod %s has no address yet", p.Pod)
		}
		if pod.HostNetwork {
			return pod.IP, nil, nil
		}
		return pod.IP, pod, nil
	}
	if !p.Addr.Is4() {
		return netip.Addr{}, nil, fmt.Errorf("address %v: give an IPv4 address or namespace/name", p.Addr)
	}
	pod, ok := r.podByIP[p.Addr]
	if ok {
		return p.Addr, pod, nil
	}
	return p.Addr, nil, nil
}

// Trace answers whether a new connection from → to on port/proto is
// allowed, from the same compiled allows the datapath's maps are written
// from: the source pod's egress (on its node), then the destination
// pod's ingress (on its).
func (r *Result) Trace(from, to Peer, proto uint8, port uint16) (Verdict, error) {
	fa, fpod, err := r.resolve(from)
	if err != nil {
		return Verdict{}, fmt.Errorf("--from: %w", err)
	}
	ta, tpod, err := r.resolve(to)
	if err != nil {
		return Verdict{}, fmt.Errorf("--to: %w", err)
	}
	v := Verdict{From: describe(fa, fpod), To: describe(ta, tpod), Proto: ProtoName(proto), Port: port,
		FromID: r.IdentityOf(fa).String(), ToID: r.IdentityOf(ta).String()}
	v.Egress = r.step(state.DirEgress, fpod, ta, proto, port)
	v.Ingress = r.step(state.DirIngress, tpod, fa, proto, port)
	v.Allowed = v.Egress.Allowed && v.Ingress.Allowed
	return v, nil
}

func describe(a netip.Addr, pod *state.Pod) string {
	if pod == nil {
		return a.String()
	}
	return pod.Key() + " (" + a.String() + ")"
}

// step decides one side: pod's policy in dir, against peer.
func (r *Result) step(dir uint8, pod *state.Pod, peer netip.Addr, proto uint8, port uint16) Step {
	s := Step{Dir: "egress"}
	if dir == state.DirIngress {
		s.Dir = "ingress"
	}
	if pod == nil {
		s.Allowed = true
		s.Reason = "not a pod: no NetworkPolicy applies"
		return s
	}
	s.Pod = pod.Key()
	// Compiled as this pod's node computes it: the peer's identity is
	// what that node's map gives.
	pp := r.Compile(pod)
	isolated := pp.Ingress
	if dir == state.DirEgress {
		isolated = pp.Egress
	}
	if !isolated {
		s.Allowed = true
		s.Reason = "no NetworkPolicy isolates the pod for " + s.Dir
		return s
	}
	if node, ok := r.nodeOf[peer]; ok && node == pod.NodeName {
		s.Allowed = true
		s.Reason = "the peer is the pod's own node (" + node + "): always allowed"
		return s
	}
	peerID := r.identityOf(peer)
	for _, a := range pp.Allows {
		if a.Dir == dir && a.matches(peerID, proto, port) {
			s.Allowed = true
			s.Reason = "allowed by " + a.Rule
			return s
		}
	}
	var names []string
	for _, p := range pp.Selecting {
		if (dir == state.DirIngress && p.Isolates.Ingress) || (dir == state.DirEgress && p.Isolates.Egress) {
			names = append(names, p.Name.String())
		}
	}
	s.Reason = "isolated by " + strings.Join(names, ", ") + "; no rule allows this peer, protocol and port"
	return s
}
