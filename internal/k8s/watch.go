package k8s

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"glia.dev/glia/internal/datapath"
)

// Watcher holds the informers that feed the agent: Nodes always; Services
// and EndpointSlices when the agent load-balances Services itself.
//
// Work is proportional to what changed: a Node update pokes NodesChanged
// only when what the datapath uses (its address or pod CIDR) changed — not
// on every status heartbeat — and a Service or EndpointSlice event marks
// just that Service dirty and pokes ServicesChanged; TakeDirtyServices
// translates only the dirty ones.
type Watcher struct {
	factory  informers.SharedInformerFactory
	nodes    cache.SharedIndexInformer
	services cache.SharedIndexInformer
	slices   cache.SharedIndexInformer

	// NodesChanged receives a value (coalesced) when a node's address or
	// pod CIDR changes, or a node comes or goes.
	NodesChanged chan struct{}
	// ServicesChanged receives a value (coalesced) when a Service or one of
	// its EndpointSlices changes.
	ServicesChanged chan struct{}

	mu    sync.Mutex
	dirty map[string]bool // "namespace/name" of Services changed since the last take

	handlers []cache.ResourceEventHandlerRegistration

	// Health records the watches' errors and their sync.
	Health *APIHealth
}

// register adds a handler and keeps its registration, so Start can wait
// until the handler has seen every initial object.
func (w *Watcher) register(inf cache.SharedIndexInformer, h cache.ResourceEventHandler) {
	reg, err := inf.AddEventHandler(h)
	if err == nil {
		w.handlers = append(w.handlers, reg)
	}
	// A watch that fails (the API server went away, a list was refused)
	// is what makes the connection unhealthy in the agent's status.
	_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) { w.Health.Failure(fmt.Errorf("watch: %w", err)) })
}

// sliceServiceIndex indexes EndpointSlices by "namespace/service-name".
const sliceServiceIndex = "service"

// NewWatcher sets up the informers; withServices adds Services and
// EndpointSlices. Their errors and sync are recorded in health.
func NewWatcher(c *Clients, withServices bool, health *APIHealth) *Watcher {
	f := informers.NewSharedInformerFactory(c.Kube, 0)
	w := &Watcher{factory: f, NodesChanged: make(chan struct{}, 1), ServicesChanged: make(chan struct{}, 1), dirty: map[string]bool{},
		Health: health}
	w.nodes = f.Core().V1().Nodes().Informer()
	w.register(w.nodes, cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke(w.NodesChanged) },
		UpdateFunc: func(o, n any) {
			if nodeRoutingChanged(o, n) {
				poke(w.NodesChanged)
			}
		},
		DeleteFunc: func(any) { poke(w.NodesChanged) },
	})
	if withServices {
		w.services = f.Core().V1().Services().Informer()
		w.register(w.services, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { w.markService(serviceKey(o)) },
			UpdateFunc: func(_, n any) { w.markService(serviceKey(n)) },
			DeleteFunc: func(o any) { w.markService(serviceKey(o)) },
		})
		w.slices = f.Discovery().V1().EndpointSlices().Informer()
		w.slices.AddIndexers(cache.Indexers{sliceServiceIndex: func(o any) ([]string, error) {
			if k := sliceServiceKey(o); k != "" {
				return []string{k}, nil
			}
			return nil, nil
		}})
		w.register(w.slices, cache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { w.markService(sliceServiceKey(o)) },
			UpdateFunc: func(o, n any) {
				w.markService(sliceServiceKey(o))
				w.markService(sliceServiceKey(n))
			},
			DeleteFunc: func(o any) { w.markService(sliceServiceKey(o)) },
		})
	}
	return w
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (w *Watcher) markService(key string) {
	if key == "" {
		return
	}
	w.mu.Lock()
	w.dirty[key] = true
	w.mu.Unlock()
	poke(w.ServicesChanged)
}

// unwrap returns the object of a delete event's tombstone.
func unwrap(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}

func serviceKey(o any) string {
	if s, ok := unwrap(o).(*corev1.Service); ok {
		return s.Namespace + "/" + s.Name
	}
	return ""
}

func sliceServiceKey(o any) string {
	es, ok := unwrap(o).(*discoveryv1.EndpointSlice)
	if !ok || es.Labels[discoveryv1.LabelServiceName] == "" {
		return ""
	}
	return es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]
}

// nodeRoutingChanged: did anything the datapath uses (address, pod CIDR) change?
func nodeRoutingChanged(o, n any) bool {
	a, ok1 := o.(*corev1.Node)
	b, ok2 := n.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	ia, _ := NodeAddress(a)
	ib, _ := NodeAddress(b)
	return ia != ib || a.Spec.PodCIDR != b.Spec.PodCIDR
}

// TakeDirtyServices returns the frontends of every Service changed since
// the last call (an empty slice for a Service that is gone) and forgets them.
func (w *Watcher) TakeDirtyServices() map[string][]datapath.Service {
	w.mu.Lock()
	keys := w.dirty
	w.dirty = map[string]bool{}
	w.mu.Unlock()
	out := make(map[string][]datapath.Service, len(keys))
	for k := range keys {
		out[k] = w.serviceFrontends(k)
	}
	return out
}

// ServiceCount is the number of Services watched.
func (w *Watcher) ServiceCount() int {
	if w == nil || w.services == nil {
		return 0
	}
	return len(w.services.GetStore().ListKeys())
}

func (w *Watcher) serviceFrontends(key string) []datapath.Service {
	o, exists, err := w.services.GetStore().GetByKey(key)
	if err != nil || !exists {
		return nil
	}
	var slices []*discoveryv1.EndpointSlice
	objs, _ := w.slices.GetIndexer().ByIndex(sliceServiceIndex, key)
	for _, so := range objs {
		slices = append(slices, so.(*discoveryv1.EndpointSlice))
	}
	return TranslateService(o.(*corev1.Service), slices)
}

// Start starts the informers and waits for their caches and for the
// handlers to have seen every initial object.
func (w *Watcher) Start(ctx context.Context) error {
	w.factory.Start(ctx.Done())
	for t, ok := range w.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("informer cache for %v did not sync", t)
		}
	}
	var synced []cache.InformerSynced
	for _, h := range w.handlers {
		synced = append(synced, h.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("informer handlers did not sync: %w", ctx.Err())
	}
	w.Health.Synced()
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

// Node returns the Node called name from the informer's cache.
func (w *Watcher) Node(name string) (*corev1.Node, bool) {
	o, ok, err := w.nodes.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	n, ok := o.(*corev1.Node)
	return n, ok
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

// Services translates every Service and its EndpointSlices into datapath
// frontends: one per (ClusterIP, port), with NodePort where the Service has
// one, sorted by protocol and frontend. The agent's full pass uses it;
// changes go through TakeDirtyServices.
func (w *Watcher) Services() []datapath.Service {
	if w.services == nil {
		return nil
	}
	var out []datapath.Service
	for _, k := range w.services.GetStore().ListKeys() {
		out = append(out, w.serviceFrontends(k)...)
	}
	// By protocol, then frontend: a stable order for listings, compared
	// without building a key string per comparison.
	slices.SortFunc(out, func(a, b datapath.Service) int {
		if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
			return c
		}
		return a.Frontend.Compare(b.Frontend)
	})
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
