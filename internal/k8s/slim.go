package k8s

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The informers' transforms: what the agent keeps of each object it
// watches, as Cilium's slim types do — the fields it reads and the
// identity the informer needs (name, namespace, resource version),
// nothing else (no managedFields, annotations, status it never reads).
// An object the transform does not know passes unchanged (a tombstone).

func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, ResourceVersion: m.ResourceVersion, UID: m.UID}
}

// slimNode keeps the address, the pod CIDR and the taints.
func slimNode(o any) (any, error) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o, nil
	}
	out := &corev1.Node{ObjectMeta: slimMeta(n.ObjectMeta)}
	out.Spec.PodCIDR = n.Spec.PodCIDR
	out.Spec.Taints = n.Spec.Taints
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	return out, nil
}

// slimService keeps what its frontends are made of.
func slimService(o any) (any, error) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return o, nil
	}
	out := &corev1.Service{ObjectMeta: slimMeta(s.ObjectMeta)}
	out.Spec.ClusterIP = s.Spec.ClusterIP
	out.Spec.Type = s.Spec.Type
	out.Spec.SessionAffinity = s.Spec.SessionAffinity
	out.Spec.Ports = make([]corev1.ServicePort, len(s.Spec.Ports))
	for i, p := range s.Spec.Ports {
		out.Spec.Ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort}
	}
	return out, nil
}

// slimSlice keeps the Service it belongs to, its ports and its endpoints'
// addresses, conditions and nodes.
func slimSlice(o any) (any, error) {
	es, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return o, nil
	}
	out := &discoveryv1.EndpointSlice{ObjectMeta: slimMeta(es.ObjectMeta), AddressType: es.AddressType, Ports: es.Ports}
	if svc := es.Labels[discoveryv1.LabelServiceName]; svc != "" {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
	}
	out.Endpoints = make([]discoveryv1.Endpoint, len(es.Endpoints))
	for i, e := range es.Endpoints {
		out.Endpoints[i] = discoveryv1.Endpoint{Addresses: e.Addresses, NodeName: e.NodeName,
			Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready, Terminating: e.Conditions.Terminating}}
	}
	return out, nil
}
