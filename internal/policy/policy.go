// Package policy computes Kubernetes NetworkPolicy (networking.k8s.io/v1)
// for glia's datapath, without touching the kernel: from the cluster's
// Pods, Namespaces, Nodes and NetworkPolicies (package state's tables) it
// derives the security identities, the address → identity entries of
// glia_ipcache, each local endpoint's policy (which directions it
// enforces and its allow entries, keyed by peer identity, protocol and
// port) and the entries of glia_policy — and it explains verdicts (Trace)
// with the very same compiled rules the maps are written from.
//
// Semantics, as upstream specifies them: a pod is isolated for a
// direction only when some policy of its namespace selects it with that
// policy type (policyTypes defaults to Ingress, plus Egress when the
// policy has egress rules); an isolated pod accepts what the union of the
// selecting policies' rules allow. A rule with no peers allows every peer;
// with no ports, every port of every protocol. A peer with a pod selector
// picks pods of the policy's namespace, with a namespace selector every
// pod of the matching namespaces, with both the matching pods of the
// matching namespaces; an ipBlock picks addresses in its CIDR and none of
// its exceptions (pod addresses included). Named ports resolve on the
// destination pod: on the endpoint itself for ingress, on the peer pods
// for egress (on every pod of an identity that has the name; pods of one
// identity normally come from one template and agree). Replies of allowed
// connections and traffic between a pod and its own node are always
// allowed (by the datapath's connection tracking and the host identity).
//
// Policy maps grow with identities and rules, not with pods: endpoints
// whose allow entries are the same share one policy number, and entries
// are keyed by identity, so a thousand pods of one Deployment cost one
// identity.
package policy

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"glia.dev/glia/internal/state"
)

// Protocol numbers.
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// ProtoNumber parses TCP, UDP or SCTP (any case).
func ProtoNumber(s string) (uint8, error) {
	switch strings.ToUpper(s) {
	case "TCP":
		return ProtoTCP, nil
	case "UDP":
		return ProtoUDP, nil
	case "SCTP":
		return ProtoSCTP, nil
	}
	return 0, fmt.Errorf("protocol %q: want TCP, UDP or SCTP", s)
}

// ProtoName names a protocol number ("any" for 0).
func ProtoName(p uint8) string {
	switch p {
	case 0:
		return "any"
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoSCTP:
		return "SCTP"
	case 1:
		return "ICMP"
	}
	return "proto-" + strconv.Itoa(int(p))
}

// Input is what the policy is computed from.
type Input struct {
	Pods       []*state.Pod
	Namespaces []*state.Namespace
	Policies   []*state.NetworkPolicy
	Nodes      []*state.Node
	// LocalNode is the node the result is for: its address is the host
	// identity, its endpoints get policies.
	LocalNode string
	// Endpoints are the local endpoints (pods and the health endpoint).
	Endpoints []*state.Endpoint
}

// Allow is one compiled allow of a pod's policy: traffic in Dir with the
// peer identity Peer (IdentityAny: any), protocol Proto (0: any, and then
// any port), ports PortLo..PortHi (0..0 with a protocol: every port).
type Allow struct {
	Dir    uint8
	Peer   uint32
	Proto  uint8
	PortLo uint16
	PortHi uint16
	// Rule is "namespace/name ingress[i]" or "… egress[i]".
	Rule string
}

func (a Allow) key() string {
	return fmt.Sprintf("%d/%d/%d/%d-%d", a.Dir, a.Peer, a.Proto, a.PortLo, a.PortHi)
}

// matches says whether a packet's (peer, protocol, port) falls in a.
func (a Allow) matches(peer uint32, proto uint8, port uint16) bool {
	if a.Peer != IdentityAny && a.Peer != peer {
		return false
	}
	if a.Proto == 0 {
		return true
	}
	if a.Proto != proto {
		return false
	}
	if a.PortLo == 0 && a.PortHi == 0 {
		return true
	}
	return port >= a.PortLo && port <= a.PortHi
}

// PodPolicy is one pod's compiled policy.
type PodPolicy struct {
	Pod *state.Pod
	// Selecting are the policies that select the pod, by name.
	Selecting []*state.NetworkPolicy
	Ingress   bool // isolated for ingress
	Egress    bool // isolated for egress
	Allows    []Allow
}

// Flags are the endpoint flags of the datapath.
func (pp *PodPolicy) Flags() uint16 {
	var f uint16
	if pp.Ingress {
		f |= state.EnforceIngress
	}
	if pp.Egress {
		f |= state.EnforceEgress
	}
	return f
}

// Result is the computed policy of one node.
type Result struct {
	in Input
	// Identities by number.
	Identities map[uint32]*Identity
	// IPCache is every prefix → identity entry, sorted by prefix.
	IPCache []*state.IPIdentity
	// Endpoints is the policy of every local endpoint, by address.
	Endpoints []*state.EndpointPolicy
	// Entries are glia_policy's entries, sorted.
	Entries []*state.PolicyEntry
	// Rules numbers the rules entries refer to (RuleRef - 1).
	Rules []string
	// PodPolicies of the local endpoints' pods, by "namespace/name".
	PodPolicies map[string]*PodPolicy

	namespaces map[string]map[string]string
	prefixes   []netip.Prefix // every policy CIDR, longest first
	byKey      map[string]*Identity
	podIdent   map[string]*Identity // "namespace/name" → identity
	byAddr     map[netip.Addr]uint32
	pods       map[string]*state.Pod
	podByIP    map[netip.Addr]*state.Pod
	localIP    netip.Addr
	nodeOf     map[netip.Addr]string // node addresses → node name
}

// Compute computes the policy of in.LocalNode.
func Compute(in Input) *Result {
	r := &Result{in: in, Identities: map[uint32]*Identity{}, PodPolicies: map[string]*PodPolicy{},
		namespaces: map[string]map[string]string{}, byKey: map[string]*Identity{}, podIdent: map[string]*Identity{},
		byAddr: map[netip.Addr]uint32{}, pods: map[string]*state.Pod{}, podByIP: map[netip.Addr]*state.Pod{},
		nodeOf: map[netip.Addr]string{}}
	for _, ns := range in.Namespaces {
		r.namespaces[ns.Name] = ns.Labels
	}
	// Every policy prefix, longest first.
	seen := map[netip.Prefix]bool{}
	for _, p := range in.Policies {
		for _, rules := range [][]state.PolicyRule{p.Ingress, p.Egress} {
			for _, rule := range rules {
				for _, peer := range rule.Peers {
					if peer.IPBlock == nil {
						continue
					}
					for _, c := range append([]netip.Prefix{peer.IPBlock.CIDR}, peer.IPBlock.Except...) {
						if c.Addr().Is4() && !seen[c.Masked()] {
							seen[c.Masked()] = true
							r.prefixes = append(r.prefixes, c.Masked())
						}
					}
				}
			}
		}
	}
	sort.Slice(r.prefixes, func(i, j int) bool {
		if r.prefixes[i].Bits() != r.prefixes[j].Bits() {
			return r.prefixes[i].Bits() > r.prefixes[j].Bits()
		}
		return r.prefixes[i].Addr().Less(r.prefixes[j].Addr())
	})

	ident := func(id *Identity) *Identity {
		k := id.Key()
		if have, ok := r.byKey[k]; ok {
			return have
		}
		r.byKey[k] = id
		return id
	}
	host := ident(&Identity{Kind: KindHost})
	ident(&Identity{Kind: KindWorld})
	ipOwner := map[netip.Addr]*Identity{}
	for _, n := range in.Nodes {
		if !n.IP.Is4() {
			continue
		}
		r.nodeOf[n.IP] = n.Name
		if n.Name == in.LocalNode {
			r.localIP = n.IP
			ipOwner[n.IP] = host
			continue
		}
		ipOwner[n.IP] = ident(&Identity{Kind: KindRemoteNode, CIDR: longest(r.prefixes, n.IP)})
	}
	pods := slices.Clone(in.Pods)
	slices.SortFunc(pods, func(a, b *state.Pod) int { return strings.Compare(a.Key(), b.Key()) })
	for _, p := range pods {
		r.pods[p.Key()] = p
		if p.HostNetwork || !p.IP.Is4() {
			continue
		}
		if _, node := ipOwner[p.IP]; node {
			continue // a node's address
		}
		id := ident(&Identity{Kind: KindPod, Namespace: p.Namespace, Labels: p.Labels, CIDR: longest(r.prefixes, p.IP)})
		if id.namedPorts == nil {
			id.namedPorts = map[string][]uint16{}
		}
		for _, np := range p.Ports {
			k := np.Protocol + "/" + np.Name
			if !slices.Contains(id.namedPorts[k], np.Port) {
				id.namedPorts[k] = append(id.namedPorts[k], np.Port)
			}
		}
		r.podIdent[p.Key()] = id
		r.podByIP[p.IP] = p
		ipOwner[p.IP] = id
	}
	cidrIdent := map[netip.Prefix]*Identity{}
	for _, c := range r.prefixes {
		cidrIdent[c] = ident(&Identity{Kind: KindCIDR, CIDR: c})
	}
	all := slices.Collect(maps.Values(r.byKey))
	number(all)
	for _, id := range all {
		r.Identities[id.ID] = id
	}

	// The address → identity entries.
	world := netip.MustParsePrefix("0.0.0.0/0")
	cache := map[netip.Prefix]uint32{world: IdentityWorld}
	for c, id := range cidrIdent {
		cache[c] = id.ID
	}
	for a, id := range ipOwner {
		cache[netip.PrefixFrom(a, 32)] = id.ID
		r.byAddr[a] = id.ID
	}
	for _, ep := range in.Endpoints {
		// The health endpoint (no pod) is the node's own.
		if ep.PodName == "" && ep.IP.Is4() {
			cache[netip.PrefixFrom(ep.IP, 32)] = IdentityHost
			r.byAddr[ep.IP] = IdentityHost
		}
	}
	for p, id := range cache {
		r.IPCache = append(r.IPCache, &state.IPIdentity{Prefix: p, Identity: id})
	}
	slices.SortFunc(r.IPCache, func(a, b *state.IPIdentity) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })

	r.endpoints()
	return r
}

// identityOf is the identity of an address, as glia_ipcache finds it.
func (r *Result) identityOf(a netip.Addr) uint32 {
	if id, ok := r.byAddr[a]; ok {
		return id
	}
	if p := longest(r.prefixes, a); p.IsValid() {
		return r.byKey[(&Identity{Kind: KindCIDR, CIDR: p}).Key()].ID
	}
	return IdentityWorld
}

// selects says whether policy p selects pod.
func selects(p *state.NetworkPolicy, pod *state.Pod) bool {
	return p.Name.Namespace == pod.Namespace && p.Pods.Matches(pod.Labels)
}

// peerMatches says whether a peer of policy p picks identity id.
func (r *Result) peerMatches(p *state.NetworkPolicy, peer state.Peer, id *Identity) bool {
	if peer.IPBlock != nil {
		switch id.Kind {
		case KindPod, KindCIDR, KindRemoteNode:
			return blockMatches(id.CIDR, peer.IPBlock.CIDR.Masked(), masked(peer.IPBlock.Except))
		}
		return false
	}
	if id.Kind != KindPod {
		return false
	}
	if peer.Namespaces != nil {
		nsLabels, ok := r.namespaces[id.Namespace]
		if !ok || !peer.Namespaces.Matches(nsLabels) {
			return false
		}
	} else if id.Namespace != p.Name.Namespace {
		return false
	}
	return peer.Pods == nil || peer.Pods.Matches(id.Labels)
}

func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Masked()
	}
	return out
}

// sortedIdentities lists identities by number.
func (r *Result) sortedIdentities() []*Identity {
	ids := slices.Collect(maps.Values(r.Identities))
	slices.SortFunc(ids, func(a, b *Identity) int { return cmp.Compare(a.ID, b.ID) })
	return ids
}

// Compile compiles pod's policy: which policies select it, the directions
// it is isolated in, and its allows.
func (r *Result) Compile(pod *state.Pod) *PodPolicy {
	pp := &PodPolicy{Pod: pod}
	policies := slices.Clone(r.in.Policies)
	slices.SortFunc(policies, func(a, b *state.NetworkPolicy) int { return strings.Compare(a.Name.String(), b.Name.String()) })
	ids := r.sortedIdentities()
	for _, p := range policies {
		if !selects(p, pod) {
			continue
		}
		pp.Selecting = append(pp.Selecting, p)
		if p.Isolates.Ingress {
			pp.Ingress = true
			for i, rule := range p.Ingress {
				pp.Allows = append(pp.Allows, r.compileRule(p, rule, state.DirIngress, fmt.Sprintf("%s ingress[%d]", p.Name, i), pod, ids)...)
			}
		}
		if p.Isolates.Egress {
			pp.Egress = true
			for i, rule := range p.Egress {
				pp.Allows = append(pp.Allows, r.compileRule(p, rule, state.DirEgress, fmt.Sprintf("%s egress[%d]", p.Name, i), pod, ids)...)
			}
		}
	}
	// One allow per key: the first rule (in policy name order) names it.
	seen := map[string]bool{}
	out := pp.Allows[:0]
	for _, a := range pp.Allows {
		if !seen[a.key()] {
			seen[a.key()] = true
			out = append(out, a)
		}
	}
	pp.Allows = out
	return pp
}

// compileRule turns one rule into allows.
func (r *Result) compileRule(p *state.NetworkPolicy, rule state.PolicyRule, dir uint8, name string, pod *state.Pod, ids []*Identity) []Allow {
	var peers []*Identity // nil: any peer
	anyPeer := len(rule.Peers) == 0
	if !anyPeer {
		for _, id := range ids {
			for _, peer := range rule.Peers {
				if r.peerMatches(p, peer, id) {
					peers = append(peers, id)
					break
				}
			}
		}
		if len(peers) == 0 {
			return nil
		}
	}
	var out []Allow
	add := func(peer uint32, proto uint8, lo, hi uint16) {
		out = append(out, Allow{Dir: dir, Peer: peer, Proto: proto, PortLo: lo, PortHi: hi, Rule: name})
	}
	forPeers := func(f func(peer uint32)) {
		if anyPeer {
			f(IdentityAny)
			return
		}
		for _, id := range peers {
			f(id.ID)
		}
	}
	if len(rule.Ports) == 0 {
		forPeers(func(peer uint32) { add(peer, 0, 0, 0) })
		return out
	}
	for _, port := range rule.Ports {
		proto, err := ProtoNumber(port.Protocol)
		if err != nil {
			continue
		}
		switch {
		case port.Name != "":
			if dir == state.DirIngress {
				// Resolved on this pod.
				for _, np := range pod.Ports {
					if np.Name == port.Name && np.Protocol == port.Protocol {
						forPeers(func(peer uint32) { add(peer, proto, np.Port, np.Port) })
					}
				}
				continue
			}
			// Resolved on the destination: every pod identity (the peers
			// picked, or all when the rule names none) with the name.
			k := port.Protocol + "/" + port.Name
			cands := peers
			if anyPeer {
				cands = ids
			}
			for _, id := range cands {
				for _, n := range id.namedPorts[k] {
					add(id.ID, proto, n, n)
				}
			}
		case port.Port == 0:
			forPeers(func(peer uint32) { add(peer, proto, 0, 0) })
		default:
			hi := port.Port
			if port.EndPort >= port.Port {
				hi = port.EndPort
			}
			forPeers(func(peer uint32) { add(peer, proto, port.Port, hi) })
		}
	}
	return out
}

// endpoints computes the policy of every local endpoint and the policy
// entries, numbering the distinct allow sets.
func (r *Result) endpoints() {
	type compiled struct {
		allows []Allow
		key    string
		hash   uint16
		id     uint16
	}
	sets := map[string]*compiled{}
	epSet := map[netip.Addr]*compiled{}
	eps := slices.Clone(r.in.Endpoints)
	slices.SortFunc(eps, func(a, b *state.Endpoint) int { return a.IP.Compare(b.IP) })
	for _, ep := range eps {
		if !ep.IP.Is4() {
			continue
		}
		row := &state.EndpointPolicy{IP: ep.IP, HostIfName: ep.HostIfName}
		r.Endpoints = append(r.Endpoints, row)
		if ep.PodName == "" {
			continue // the health endpoint: the node's, not a pod
		}
		row.Pod = ep.PodNamespace + "/" + ep.PodName
		pod, ok := r.pods[row.Pod]
		if !ok {
			// Its Pod is not known yet: deny until it is.
			row.Flags = state.EnforceIngress | state.EnforceEgress
			row.Waiting = "pod " + row.Pod + " is not known to the agent yet"
			continue
		}
		// The endpoint's own address: the Pod's status may lag behind.
		if pod.IP != ep.IP {
			pod = &state.Pod{Namespace: pod.Namespace, Name: pod.Name, Labels: pod.Labels, IP: ep.IP,
				NodeName: pod.NodeName, Ports: pod.Ports}
		}
		pp := r.Compile(pod)
		r.PodPolicies[row.Pod] = pp
		row.Flags = pp.Flags()
		if len(pp.Allows) == 0 {
			continue // policy 0: no entries
		}
		keys := make([]string, len(pp.Allows))
		for i, a := range pp.Allows {
			keys[i] = a.key()
		}
		slices.Sort(keys)
		k := strings.Join(keys, ",")
		c, ok := sets[k]
		if !ok {
			h := fnv.New32a()
			h.Write([]byte(k))
			c = &compiled{allows: pp.Allows, key: k, hash: uint16(h.Sum32()%65535) + 1}
			sets[k] = c
		}
		epSet[ep.IP] = c
	}
	// Number the sets: by hash, the next free number on a collision.
	cs := slices.Collect(maps.Values(sets))
	slices.SortFunc(cs, func(a, b *compiled) int {
		if a.hash != b.hash {
			return cmp.Compare(a.hash, b.hash)
		}
		return strings.Compare(a.key, b.key)
	})
	taken := map[uint16]bool{}
	for _, c := range cs {
		n := c.hash
		for taken[n] {
			n++
			if n == 0 {
				n = 1
			}
		}
		taken[n] = true
		c.id = n
	}
	for _, row := range r.Endpoints {
		if c, ok := epSet[row.IP]; ok {
			row.PolicyID = c.id
		}
	}
	ruleRef := map[string]uint32{}
	entries := map[state.PolicyKey]*state.PolicyEntry{}
	for _, c := range cs {
		for _, a := range c.allows {
			ref, ok := ruleRef[a.Rule]
			if !ok {
				r.Rules = append(r.Rules, a.Rule)
				ref = uint32(len(r.Rules))
				ruleRef[a.Rule] = ref
			}
			for _, k := range Keys(c.id, a) {
				if _, dup := entries[k]; !dup {
					entries[k] = &state.PolicyEntry{Key: k, Rule: a.Rule, RuleRef: ref}
				}
			}
		}
	}
	r.Entries = slices.Collect(maps.Values(entries))
	slices.SortFunc(r.Entries, func(a, b *state.PolicyEntry) int { return strings.Compare(a.Key.String(), b.Key.String()) })
}

// Keys are the LPM entries of one allow of policy id: a port range
// becomes the prefix-aligned blocks that cover it.
func Keys(id uint16, a Allow) []state.PolicyKey {
	base := state.PolicyKey{PolicyID: id, Dir: a.Dir, Identity: a.Peer, Proto: a.Proto}
	if a.Proto == 0 || (a.PortLo == 0 && a.PortHi == 0) {
		return []state.PolicyKey{base}
	}
	var out []state.PolicyKey
	lo, hi := uint32(a.PortLo), uint32(a.PortHi)
	for lo <= hi {
		// The largest aligned block starting at lo that fits.
		size := uint32(1)
		for size < 1<<16 && lo%(size*2) == 0 && lo+size*2-1 <= hi {
			size *= 2
		}
		bits := uint8(16)
		for s := size; s > 1; s /= 2 {
			bits--
		}
		k := base
		k.Port, k.PortBits = uint16(lo), bits
		out = append(out, k)
		lo += size
	}
	return out
}

// IdentityOf returns the identity of an address, as the datapath finds it.
func (r *Result) IdentityOf(a netip.Addr) *Identity { return r.Identities[r.identityOf(a)] }

// Selected counts the local endpoints some policy isolates.
func (r *Result) Selected() int {
	n := 0
	for _, e := range r.Endpoints {
		if e.Flags != 0 {
			n++
		}
	}
	return n
}
