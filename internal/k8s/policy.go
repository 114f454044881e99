package k8s

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/statedb"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"glia.dev/glia/internal/state"
)

// Network policy's inputs: every Pod, Namespace and NetworkPolicy of the
// cluster (list/watch, cluster-wide), written into the pods, namespaces
// and network-policies tables, parsed once here. A Pod keeps only what
// policy reads (namespace, name, labels, address, node, host network,
// named container ports).

// policyInformers starts watching what network policy needs.
func (w *Watcher) watchPolicy() {
	f := w.factory
	txn := w.tables.DB.WriteTxn(w.tables.Pods, w.tables.Namespaces, w.tables.NetworkPolicies)
	initPods := w.tables.Pods.RegisterInitializer(txn, "k8s")
	initNS := w.tables.Namespaces.RegisterInitializer(txn, "k8s")
	initPolicies := w.tables.NetworkPolicies.RegisterInitializer(txn, "k8s")
	txn.Commit()
	w.initPolicy = func(txn statedb.WriteTxn) { initPods(txn); initNS(txn); initPolicies(txn) }

	pods := f.Core().V1().Pods().Informer()
	_ = pods.SetTransform(slimPod)
	w.register(pods, cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { upsert(w, w.tables.Pods, podOf(o)) },
		UpdateFunc: func(_, n any) { upsert(w, w.tables.Pods, podOf(n)) },
		DeleteFunc: func(o any) {
			if p := podOf(unwrap(o)); p != nil {
				remove(w, w.tables.Pods, p)
			}
		},
	})
	ns := f.Core().V1().Namespaces().Informer()
	_ = ns.SetTransform(slimNamespace)
	w.register(ns, cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { upsert(w, w.tables.Namespaces, namespaceOf(o)) },
		UpdateFunc: func(_, n any) { upsert(w, w.tables.Namespaces, namespaceOf(n)) },
		DeleteFunc: func(o any) {
			if n := namespaceOf(unwrap(o)); n != nil {
				remove(w, w.tables.Namespaces, n)
			}
		},
	})
	np := f.Networking().V1().NetworkPolicies().Informer()
	w.register(np, cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.upsertPolicy(o) },
		UpdateFunc: func(_, n any) { w.upsertPolicy(n) },
		DeleteFunc: func(o any) {
			if p, ok := unwrap(o).(*networkingv1.NetworkPolicy); ok {
				remove(w, w.tables.NetworkPolicies, &state.NetworkPolicy{Name: state.PolicyName{Namespace: p.Namespace, Name: p.Name}})
			}
		},
	})
}

func upsert[Obj any](w *Watcher, tbl statedb.RWTable[Obj], o Obj) {
	if any(o) == nil {
		return
	}
	txn := w.tables.DB.WriteTxn(tbl)
	tbl.Insert(txn, o)
	txn.Commit()
}

func remove[Obj any](w *Watcher, tbl statedb.RWTable[Obj], o Obj) {
	txn := w.tables.DB.WriteTxn(tbl)
	tbl.Delete(txn, o)
	txn.Commit()
}

func (w *Watcher) upsertPolicy(o any) {
	p, ok := o.(*networkingv1.NetworkPolicy)
	if !ok {
		return
	}
	np, err := PolicyFromK8s(p)
	if err != nil {
		// The API server validates policies: this is a policy glia cannot
		// read. Enforce nothing of it would be a silent allow for the pods
		// it isolates; deny is what it can do: the policy isolates its pods
		// (both directions it names) with no rule.
		w.log.Warn("NetworkPolicy cannot be parsed: its pods are isolated with no rule allowing anything until it is fixed",
			"policy", p.Namespace+"/"+p.Name, "error", err)
	}
	upsert(w, w.tables.NetworkPolicies, np)
}

// slimPod keeps what policy reads.
func slimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	out := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels,
		ResourceVersion: p.ResourceVersion, UID: p.UID}}
	out.Spec.NodeName = p.Spec.NodeName
	out.Spec.HostNetwork = p.Spec.HostNetwork
	for _, c := range p.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, cp := range c.Ports {
			if cp.Name != "" {
				ports = append(ports, corev1.ContainerPort{Name: cp.Name, ContainerPort: cp.ContainerPort, Protocol: cp.Protocol})
			}
		}
		if len(ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Ports: ports})
		}
	}
	out.Status.PodIP = p.Status.PodIP
	out.Status.PodIPs = p.Status.PodIPs
	return out, nil
}

// PodFromK8s is a Pod as policy sees it.
func PodFromK8s(p *corev1.Pod) *state.Pod {
	out := &state.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, NodeName: p.Spec.NodeName,
		HostNetwork: p.Spec.HostNetwork}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	for _, ip := range append([]corev1.PodIP{{IP: p.Status.PodIP}}, p.Status.PodIPs...) {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a.Is4() {
			out.IP = a
			break
		}
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == "" || cp.ContainerPort <= 0 || cp.ContainerPort > 65535 {
				continue
			}
			proto := string(cp.Protocol)
			if proto == "" {
				proto = "TCP"
			}
			out.Ports = append(out.Ports, state.NamedPort{Name: cp.Name, Protocol: proto, Port: uint16(cp.ContainerPort)})
		}
	}
	slices.SortFunc(out.Ports, func(a, b state.NamedPort) int {
		return strings.Compare(a.Protocol+"/"+a.Name+"/"+fmt.Sprint(a.Port), b.Protocol+"/"+b.Name+"/"+fmt.Sprint(b.Port))
	})
	return out
}

func podOf(o any) *state.Pod {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	return PodFromK8s(p)
}

func slimNamespace(o any) (any, error) {
	n, ok := o.(*corev1.Namespace)
	if !ok {
		return o, nil
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels, ResourceVersion: n.ResourceVersion, UID: n.UID}}, nil
}

func namespaceOf(o any) *state.Namespace {
	n, ok := o.(*corev1.Namespace)
	if !ok {
		return nil
	}
	l := n.Labels
	if l == nil {
		l = map[string]string{}
	}
	return &state.Namespace{Name: n.Name, Labels: l}
}

// selector parses a label selector.
func selector(s *metav1.LabelSelector) (*state.Selector, error) {
	if s == nil {
		return nil, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return nil, err
	}
	return &state.Selector{Selector: sel, Text: sel.String()}, nil
}

// PolicyFromK8s parses a NetworkPolicy. On an error it returns the
// policy isolating its pods with no rules (and the error): what it cannot
// read, it denies.
func PolicyFromK8s(p *networkingv1.NetworkPolicy) (*state.NetworkPolicy, error) {
	out := &state.NetworkPolicy{Name: state.PolicyName{Namespace: p.Namespace, Name: p.Name}, Generation: p.Generation}
	types := p.Spec.PolicyTypes
	if len(types) == 0 {
		types = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(p.Spec.Egress) > 0 {
			types = append(types, networkingv1.PolicyTypeEgress)
		}
	}
	for _, t := range types {
		switch t {
		case networkingv1.PolicyTypeIngress:
			out.Isolates.Ingress = true
		case networkingv1.PolicyTypeEgress:
			out.Isolates.Egress = true
		}
	}
	pods, err := selector(&p.Spec.PodSelector)
	if err != nil {
		// Which pods it isolates is unknown: every pod of its namespace.
		out.Pods = state.Selector{Selector: labels.Everything(), Text: "(unparsable: every pod)"}
		return out, fmt.Errorf("spec.podSelector: %w", err)
	}
	out.Pods = *pods
	fail := func(err error) (*state.NetworkPolicy, error) {
		out.Ingress, out.Egress = nil, nil
		return out, err
	}
	for i, r := range p.Spec.Ingress {
		rule, err := ruleOf(r.From, r.Ports)
		if err != nil {
			return fail(fmt.Errorf("spec.ingress[%d]: %w", i, err))
		}
		out.Ingress = append(out.Ingress, rule)
	}
	for i, r := range p.Spec.Egress {
		rule, err := ruleOf(r.To, r.Ports)
		if err != nil {
			return fail(fmt.Errorf("spec.egress[%d]: %w", i, err))
		}
		out.Egress = append(out.Egress, rule)
	}
	return out, nil
}

func ruleOf(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (state.PolicyRule, error) {
	var rule state.PolicyRule
	for j, peer := range peers {
		var out state.Peer
		var err error
		if out.Pods, err = selector(peer.PodSelector); err != nil {
			return rule, fmt.Errorf("peer %d podSelector: %w", j, err)
		}
		if out.Namespaces, err = selector(peer.NamespaceSelector); err != nil {
			return rule, fmt.Errorf("peer %d namespaceSelector: %w", j, err)
		}
		if b := peer.IPBlock; b != nil {
			c, err := netip.ParsePrefix(b.CIDR)
			if err != nil {
				return rule, fmt.Errorf("peer %d ipBlock.cidr: %w", j, err)
			}
			blk := &state.IPBlock{CIDR: c.Masked()}
			for _, e := range b.Except {
				ep, err := netip.ParsePrefix(e)
				if err != nil {
					return rule, fmt.Errorf("peer %d ipBlock.except: %w", j, err)
				}
				blk.Except = append(blk.Except, ep.Masked())
			}
			if !c.Addr().Is4() {
				continue // an IPv6 block: no IPv4 address is in it
			}
			out.IPBlock = blk
		}
		if out.Pods == nil && out.Namespaces == nil && out.IPBlock == nil {
			return rule, fmt.Errorf("peer %d: empty", j)
		}
		rule.Peers = append(rule.Peers, out)
	}
	if len(peers) > 0 && len(rule.Peers) == 0 {
		// Only IPv6 blocks: no IPv4 peer at all. A rule with no peers
		// would allow everyone; this one allows no one.
		rule.Peers = []state.Peer{{IPBlock: &state.IPBlock{CIDR: netip.MustParsePrefix("0.0.0.0/0"),
			Except: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}}}
	}
	for j, p := range ports {
		pp := state.PolicyPort{Protocol: "TCP"}
		if p.Protocol != nil {
			pp.Protocol = string(*p.Protocol)
		}
		if p.Port != nil {
			if p.Port.StrVal != "" || p.Port.Type == 1 {
				pp.Name = p.Port.StrVal
			} else {
				if p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
					return rule, fmt.Errorf("port %d: %d out of range", j, p.Port.IntVal)
				}
				pp.Port = uint16(p.Port.IntVal)
			}
		}
		if p.EndPort != nil {
			if pp.Port == 0 || *p.EndPort < int32(pp.Port) || *p.EndPort > 65535 {
				return rule, fmt.Errorf("port %d: endPort %d needs a numeric port at most it", j, *p.EndPort)
			}
			pp.EndPort = uint16(*p.EndPort)
		}
		rule.Ports = append(rule.Ports, pp)
	}
	return rule, nil
}
