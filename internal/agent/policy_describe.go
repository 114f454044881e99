package agent

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/policy"
	"glia.dev/glia/internal/state"
)

// describePolicy is the node's policy as `glia policy get` shows it: every
// NetworkPolicy as glia read it, and what each local endpoint enforces
// (the compiled allows the maps are written from).
func describePolicy(r *policy.Result) api.PolicyDocument {
	doc := api.PolicyDocument{Node: r.LocalNode(), Identities: len(r.Identities),
		IPCacheEntries: len(r.IPCache), PolicyEntries: len(r.Entries)}
	pols := slices.Clone(r.Policies())
	slices.SortFunc(pols, func(a, b *state.NetworkPolicy) int { return strings.Compare(a.Name.String(), b.Name.String()) })
	for _, p := range pols {
		s := api.PolicySummary{Name: p.Name.String(), PodSelector: p.Pods.String()}
		if p.Isolates.Ingress {
			s.Types = append(s.Types, "Ingress")
			s.Ingress = policyRuleLines(p.Ingress, "from")
		}
		if p.Isolates.Egress {
			s.Types = append(s.Types, "Egress")
			s.Egress = policyRuleLines(p.Egress, "to")
		}
		doc.Policies = append(doc.Policies, s)
	}
	for _, e := range r.Endpoints {
		out := api.PolicyEndpoint{IP: e.IP.String(), Pod: e.Pod, Ingress: e.Flags&state.EnforceIngress != 0,
			Egress: e.Flags&state.EnforceEgress != 0, PolicyID: e.PolicyID, Waiting: e.Waiting}
		if e.Pod == "" {
			out.Pod = "(health endpoint)"
		}
		out.Identity = r.IdentityOf(e.IP).String()
		if pp, ok := r.PodPolicies[e.Pod]; ok {
			for _, p := range pp.Selecting {
				out.Policies = append(out.Policies, p.Name.String())
			}
			for _, a := range pp.Allows {
				out.Allows = append(out.Allows, api.PolicyAllow{Direction: policyDirName(a.Dir), Peer: policyPeerName(r, a.Peer),
					Port: policyPortName(a), Rule: a.Rule})
			}
		}
		doc.Endpoints = append(doc.Endpoints, out)
	}
	return doc
}

func policyRuleLines(rules []state.PolicyRule, word string) []string {
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		peers := "any peer"
		if len(r.Peers) > 0 {
			ps := make([]string, len(r.Peers))
			for i, p := range r.Peers {
				ps[i] = p.String()
			}
			peers = strings.Join(ps, " or ")
		}
		ports := "any port"
		if len(r.Ports) > 0 {
			ps := make([]string, len(r.Ports))
			for i, p := range r.Ports {
				ps[i] = p.String()
			}
			ports = strings.Join(ps, ", ")
		}
		out = append(out, word+" "+peers+" on "+ports)
	}
	if len(out) == 0 {
		out = append(out, "(no rule: nothing allowed)")
	}
	return out
}

func policyDirName(d uint8) string {
	if d == state.DirEgress {
		return "egress"
	}
	return "ingress"
}

func policyPortName(a policy.Allow) string {
	switch {
	case a.Proto == 0:
		return "any"
	case a.PortLo == 0 && a.PortHi == 0:
		return policy.ProtoName(a.Proto) + "/*"
	case a.PortLo == a.PortHi:
		return policy.ProtoName(a.Proto) + "/" + strconv.Itoa(int(a.PortLo))
	}
	return fmt.Sprintf("%s/%d-%d", policy.ProtoName(a.Proto), a.PortLo, a.PortHi)
}

func policyPeerName(r *policy.Result, id uint32) string {
	if id == policy.IdentityAny {
		return "any"
	}
	if i, ok := r.Identities[id]; ok {
		return i.String()
	}
	return strconv.FormatUint(uint64(id), 10)
}

// policySelectors lists every selector of every policy and the identities it
// matches (`glia policy selectors`).
func policySelectors(r *policy.Result) []api.PolicySelector {
	var out []api.PolicySelector
	ids := r.SortedIdentities()
	pols := slices.Clone(r.Policies())
	slices.SortFunc(pols, func(a, b *state.NetworkPolicy) int { return strings.Compare(a.Name.String(), b.Name.String()) })
	for _, p := range pols {
		sel := api.PolicySelector{Policy: p.Name.String(), Where: "podSelector", Selector: p.Pods.String() + " in namespace " + p.Name.Namespace}
		for _, id := range ids {
			if id.Kind == policy.KindPod && id.Namespace == p.Name.Namespace && p.Pods.Matches(id.Labels) {
				sel.Identities = append(sel.Identities, id.String())
			}
		}
		out = append(out, sel)
		for _, part := range []struct {
			name, word string
			rules      []state.PolicyRule
		}{{"ingress", "from", p.Ingress}, {"egress", "to", p.Egress}} {
			for i, rule := range part.rules {
				for j, peer := range rule.Peers {
					s := api.PolicySelector{Policy: p.Name.String(), Where: fmt.Sprintf("%s[%d].%s[%d]", part.name, i, part.word, j), Selector: peer.String()}
					for _, id := range ids {
						if r.PeerMatches(p, peer, id) {
							s.Identities = append(s.Identities, id.String())
						}
					}
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// policyTraceAPI is Trace in the API's form.
func policyTraceAPI(v policy.Verdict) api.PolicyTrace {
	step := func(s policy.Step) api.PolicyStep {
		return api.PolicyStep{Direction: s.Dir, Pod: s.Pod, Allowed: s.Allowed, Reason: s.Reason}
	}
	return api.PolicyTrace{From: v.From, To: v.To, FromIdentity: v.FromID, ToIdentity: v.ToID,
		Port: strconv.Itoa(int(v.Port)) + "/" + v.Proto, Egress: step(v.Egress), Ingress: step(v.Ingress),
		Allowed: v.Allowed, Lines: v.Lines()}
}
