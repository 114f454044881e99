package k8s

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"glia.dev/glia/internal/datapath"
)

// Watcher holds the informers that feed the agent: Nodes always; Services
// and EndpointSlices when the agent load-balances Services itself. Every
// change pokes Changed; the agent's reconcilers read the listers.
type Watcher struct {
	factory  informers.SharedInformerFactory
	nodes    cache.SharedIndexInformer
	services cache.SharedIndexInformer
	slices   cache.SharedIndexInformer
	// Changed receives a value (coalesced) whenever anything watched changes.
	Changed chan struct{}
}

// NewWatcher sets up the informers; withServices adds Services and EndpointSlices.
func NewWatcher(c *Clients, withServices bool) *Watcher {
	f := informers.NewSharedInformerFactory(c.Kube, 10*time.Minute)
	w := &Watcher{factory: f, Changed: make(chan struct{}, 1)}
	poke := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.poke() },
		UpdateFunc: func(any, any) { w.poke() },
		DeleteFunc: func(any) { w.poke() },
	}
	w.nodes = f.Core().V1().Nodes().Informer()
	w.nodes.AddEventHandler(poke)
	if withServices {
		w.services = f.Core().V1().Services().Informer()
		w.services.AddEventHandler(poke)
		w.slices = f.Discovery().V1().EndpointSlices().Informer()
		w.slices.AddEventHandler(poke)
	}
	return w
}

func (w *Watcher) poke() {
	select {
	case w.Changed <- struct{}{}:
	default:
	}
}

// Start starts the informers and waits for their caches.
func (w *Watcher) Start(ctx context.Context) error {
	w.factory.Start(ctx.Done())
	for t, ok := range w.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("informer cache for %v did not sync", t)
		}
	}
	return nil
}

// Stop stops the informers.
func (w *Watcher) Stop() { w.factory.Shutdown() }

// RemoteNodes lists every node but self with its address and pod CIDR.
func (w *Watcher) RemoteNodes(self string) []datapath.RemoteNode {
	var out []datapath.RemoteNode
	for _, o := range w.nodes.GetStore().List() {
		n := o.(*corev1.Node)
		if n.Name == self {
			continue
		}
		ip, err := NodeAddress(n)
		if err != nil {
			continue
		}
		cidr, err := netip.ParsePrefix(n.Spec.PodCIDR)
		if err != nil {
			continue
		}
		out = append(out, datapath.RemoteNode{Name: n.Name, IP: ip, PodCIDR: cidr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// NodeCount is the number of nodes in the cluster.
func (w *Watcher) NodeCount() int { return len(w.nodes.GetStore().List()) }

// Nodes returns every Node.
func (w *Watcher) Nodes() []*corev1.Node {
	var out []*corev1.Node
	for _, o := range w.nodes.GetStore().List() {
		out = append(out, o.(*corev1.Node))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Services translates Services and their EndpointSlices into datapath
// frontends: one per (ClusterIP, port), with NodePort where the Service has one.
func (w *Watcher) Services() []datapath.Service {
	if w.services == nil {
		return nil
	}
	bySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, o := range w.slices.GetStore().List() {
		es := o.(*discoveryv1.EndpointSlice)
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" || es.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		bySvc[es.Namespace+"/"+svc] = append(bySvc[es.Namespace+"/"+svc], es)
	}
	var out []datapath.Service
	for _, o := range w.services.GetStore().List() {
		s := o.(*corev1.Service)
		out = append(out, TranslateService(s, bySvc[s.Namespace+"/"+s.Name])...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// TranslateService turns one Service and its EndpointSlices into frontends.
// Headless Services and those without a ClusterIP have none; only IPv4
// slices and addresses become backends.
func TranslateService(s *corev1.Service, slices []*discoveryv1.EndpointSlice) []datapath.Service {
	vip, err := netip.ParseAddr(s.Spec.ClusterIP)
	if err != nil || !vip.Is4() {
		return nil
	}
	var out []datapath.Service
	for _, p := range s.Spec.Ports {
		if p.Protocol != corev1.ProtocolTCP && p.Protocol != corev1.ProtocolUDP {
			continue
		}
		fe := datapath.Service{
			Namespace: s.Namespace, Name: s.Name, PortName: p.Name, Protocol: string(p.Protocol),
			Frontend:        netip.AddrPortFrom(vip, uint16(p.Port)),
			SessionAffinity: s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP,
		}
		if s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer {
			fe.NodePort = uint16(p.NodePort)
		}
		seen := map[netip.AddrPort]bool{}
		for _, es := range slices {
			if es.AddressType != discoveryv1.AddressTypeIPv4 {
				continue // an IPv4 frontend balances to IPv4 backends only
			}
			var port int32 = -1
			for _, ep := range es.Ports {
				if ep.Port == nil || (ep.Protocol != nil && *ep.Protocol != p.Protocol) {
					continue
				}
				if (ep.Name == nil && p.Name == "") || (ep.Name != nil && *ep.Name == p.Name) {
					port = *ep.Port
				}
			}
			if port < 0 {
				continue
			}
			for _, e := range es.Endpoints {
				ready := e.Conditions.Ready == nil || *e.Conditions.Ready
				terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
				node := ""
				if e.NodeName != nil {
					node = *e.NodeName
				}
				for _, a := range e.Addresses {
					ip, err := netip.ParseAddr(a)
					if err != nil || !ip.Is4() {
						continue
					}
					ap := netip.AddrPortFrom(ip, uint16(port))
					if seen[ap] {
						continue
					}
					seen[ap] = true
					fe.Backends = append(fe.Backends, datapath.Backend{Addr: ap, NodeName: node, Ready: ready, Terminating: terminating})
				}
			}
		}
		sort.Slice(fe.Backends, func(i, j int) bool { return fe.Backends[i].Addr.Compare(fe.Backends[j].Addr) < 0 })
		out = append(out, fe)
	}
	return out
}
