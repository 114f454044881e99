package policy

import (
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Reserved identities (as Cilium numbers them, where it has them).
const (
	// IdentityAny is no identity: in a policy key, any peer.
	IdentityAny uint32 = 0
	// IdentityHost is this node (its addresses): always allowed.
	IdentityHost uint32 = 1
	// IdentityWorld is every address no pod, node or policy CIDR covers.
	IdentityWorld uint32 = 2
	// IdentityRemoteNode is another node of the cluster.
	IdentityRemoteNode uint32 = 6
	// firstDynamic is the first identity computed from labels or a CIDR.
	firstDynamic uint32 = 256
)

// Kind is what an identity stands for.
type Kind string

// Kinds of identities.
const (
	KindPod        Kind = "pod"
	KindCIDR       Kind = "cidr"
	KindRemoteNode Kind = "remote-node"
	KindHost       Kind = "host"
	KindWorld      Kind = "world"
)

// Identity is a security identity: the pods of one namespace with one
// label set (and, when some policy's ipBlock covers their addresses, the
// longest such CIDR: ipBlock rules match pod addresses too), the
// addresses of a policy CIDR, the other nodes, this node, or the world.
//
// Identities are the same on every node: an identity's number is a hash
// of what it stands for (its Key), and the rare collision is resolved by
// the next free number, in the order of (hash, key), over the identities
// of the whole cluster — which every agent computes from the same Pods,
// Namespaces, Nodes and NetworkPolicies. No identity ever leaves a node
// in a packet (the receiving node maps the source address to an identity
// through its own map), so two agents whose watches are a moment apart
// each stay consistent with themselves.
type Identity struct {
	ID        uint32
	Kind      Kind
	Namespace string            // KindPod
	Labels    map[string]string // KindPod
	// CIDR is the policy prefix the identity's addresses lie in: the
	// longest one (pods, remote nodes), or the identity's own (KindCIDR);
	// invalid when none.
	CIDR netip.Prefix
	// namedPorts of the identity's pods, "PROTO/name" → port numbers.
	namedPorts map[string][]uint16
}

// Key is what the identity stands for, as text: the input of its number.
func (i *Identity) Key() string {
	var b strings.Builder
	b.WriteString(string(i.Kind))
	if i.Kind == KindPod {
		b.WriteString(":ns=")
		b.WriteString(i.Namespace)
		keys := slices.Sorted(maps.Keys(i.Labels))
		for _, k := range keys {
			b.WriteString(";")
			b.WriteString(k)
			b.WriteString("=")
			b.WriteString(i.Labels[k])
		}
	}
	if i.CIDR.IsValid() {
		b.WriteString(":cidr=")
		b.WriteString(i.CIDR.String())
	}
	return b.String()
}

func (i *Identity) String() string {
	switch i.Kind {
	case KindPod:
		s := fmt.Sprintf("%d (ns %s, %s)", i.ID, i.Namespace, labelString(i.Labels))
		if i.CIDR.IsValid() {
			s = strings.TrimSuffix(s, ")") + ", in " + i.CIDR.String() + ")"
		}
		return s
	case KindCIDR:
		return fmt.Sprintf("%d (cidr %s)", i.ID, i.CIDR)
	case KindRemoteNode:
		if i.CIDR.IsValid() {
			return fmt.Sprintf("%d (remote-node, in %s)", i.ID, i.CIDR)
		}
		return fmt.Sprintf("%d (remote-node)", i.ID)
	}
	return fmt.Sprintf("%d (%s)", i.ID, i.Kind)
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return "no labels"
	}
	return labels.Set(l).String()
}

// hashID maps a key to [firstDynamic, 2^32).
func hashID(key string) uint32 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return firstDynamic + uint32(h.Sum64()%uint64(1<<32-uint64(firstDynamic)))
}

// number gives every identity its number: its hash, or on a collision the
// next free number, deciding in the order of (hash, key).
func number(ids []*Identity) {
	type cand struct {
		id   *Identity
		hash uint32
		key  string
	}
	cs := make([]cand, 0, len(ids))
	for _, id := range ids {
		switch id.Kind {
		case KindHost:
			id.ID = IdentityHost
			continue
		case KindWorld:
			id.ID = IdentityWorld
			continue
		case KindRemoteNode:
			if !id.CIDR.IsValid() {
				id.ID = IdentityRemoteNode
				continue
			}
		}
		k := id.Key()
		cs = append(cs, cand{id, hashID(k), k})
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].hash != cs[j].hash {
			return cs[i].hash < cs[j].hash
		}
		return cs[i].key < cs[j].key
	})
	taken := make(map[uint32]bool, len(cs))
	for _, c := range cs {
		n := c.hash
		for taken[n] {
			n++
			if n < firstDynamic {
				n = firstDynamic
			}
		}
		taken[n] = true
		c.id.ID = n
	}
}

// prefixWithin says whether p lies inside c (c contains all of p).
func prefixWithin(p, c netip.Prefix) bool {
	return c.Bits() <= p.Bits() && c.Contains(p.Addr())
}

// blockMatches says whether addresses whose longest policy prefix is p
// match an ipBlock: p lies in its CIDR and in none of its exceptions.
// (Every ipBlock CIDR and exception is itself a policy prefix, so an
// address's longest policy prefix decides its membership in all of them.)
func blockMatches(p netip.Prefix, cidr netip.Prefix, except []netip.Prefix) bool {
	if !p.IsValid() || !prefixWithin(p, cidr) {
		return false
	}
	for _, e := range except {
		if prefixWithin(p, e) {
			return false
		}
	}
	return true
}

// longest returns the longest prefix of ps (sorted longest first)
// containing a, or the zero prefix.
func longest(ps []netip.Prefix, a netip.Addr) netip.Prefix {
	for _, p := range ps {
		if p.Contains(a) {
			return p
		}
	}
	return netip.Prefix{}
}
