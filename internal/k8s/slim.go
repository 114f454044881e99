package k8s

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The informers' transforms: what the agent keeps of each object it
// watches, as Cilium's slim types do — the fields it reads, parsed once,
// and the identity the informer's store needs (name, namespace, resource
// version); nothing else (no managedFields, annotations, status it never
// reads). Nodes stay corev1.Nodes (there are few, and the taint is read
// from them); Services and EndpointSlices, thousands, become the small
// types below. An object the transform does not know passes unchanged (a
// tombstone).

// meta is an object's identity, for the informer's store.
type meta struct {
	name, namespace, resourceVersion string
}

// GetObjectMeta makes meta a metav1.ObjectMetaAccessor, which the
// informer's keys and tombstones need.
func (m *meta) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: m.name, Namespace: m.namespace, ResourceVersion: m.resourceVersion}
}

func metaOf(m metav1.ObjectMeta) meta {
	return meta{name: m.Name, namespace: m.Namespace, resourceVersion: m.ResourceVersion}
}

// slimNode keeps the address, the pod CIDR and the taints.
func slimNode(o any) (any, error) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o, nil
	}
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, ResourceVersion: n.ResourceVersion, UID: n.UID}}
	out.Spec.PodCIDR = n.Spec.PodCIDR
	out.Spec.Taints = n.Spec.Taints
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	return out, nil
}

// service is what the agent keeps of a Service: what its frontends are
// made of.
type service struct {
	meta
	clusterIP netip.Addr // invalid: headless or none
	nodePorts bool       // NodePort or LoadBalancer
	affinity  bool       // ClientIP session affinity
	ports     []servicePort
}

type servicePort struct {
	name     string
	protocol corev1.Protocol
	port     uint16
	nodePort uint16
}

func slimService(o any) (any, error) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return o, nil
	}
	return serviceOf(s), nil
}

func serviceOf(s *corev1.Service) *service {
	out := &service{meta: metaOf(s.ObjectMeta),
		nodePorts: s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer,
		affinity:  s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP}
	out.clusterIP, _ = netip.ParseAddr(s.Spec.ClusterIP)
	out.ports = make([]servicePort, len(s.Spec.Ports))
	for i, p := range s.Spec.Ports {
		out.ports[i] = servicePort{name: p.Name, protocol: p.Protocol, port: uint16(p.Port), nodePort: uint16(p.NodePort)}
	}
	return out
}

// slice is what the agent keeps of an EndpointSlice: the Service it
// belongs to, its ports and its endpoints' addresses, conditions and nodes.
type slice struct {
	meta
	service   string // the kubernetes.io/service-name label
	ipv4      bool   // AddressType IPv4 (others are not balanced to)
	ports     []slicePort
	endpoints []sliceEndpoint
}

type slicePort struct {
	name     string          // "" also for an unnamed port
	protocol corev1.Protocol // "": any
	port     int32           // -1: none
}

type sliceEndpoint struct {
	addrs       []netip.Addr // IPv4 only
	node        string
	ready       bool
	terminating bool
}

func slimSlice(o any) (any, error) {
	es, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return o, nil
	}
	return sliceOf(es), nil
}

func sliceOf(es *discoveryv1.EndpointSlice) *slice {
	out := &slice{meta: metaOf(es.ObjectMeta), service: es.Labels[discoveryv1.LabelServiceName],
		ipv4: es.AddressType == discoveryv1.AddressTypeIPv4}
	if !out.ipv4 {
		return out // an IPv4 frontend balances to IPv4 backends only
	}
	out.ports = make([]slicePort, len(es.Ports))
	for i, p := range es.Ports {
		sp := slicePort{port: -1}
		if p.Name != nil {
			sp.name = *p.Name
		}
		if p.Protocol != nil {
			sp.protocol = *p.Protocol
		}
		if p.Port != nil {
			sp.port = *p.Port
		}
		out.ports[i] = sp
	}
	out.endpoints = make([]sliceEndpoint, 0, len(es.Endpoints))
	for _, e := range es.Endpoints {
		se := sliceEndpoint{ready: e.Conditions.Ready == nil || *e.Conditions.Ready,
			terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating}
		if e.NodeName != nil {
			se.node = *e.NodeName
		}
		for _, a := range e.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
				se.addrs = append(se.addrs, ip)
			}
		}
		out.endpoints = append(out.endpoints, se)
	}
	return out
}
