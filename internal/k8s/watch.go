package k8s

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"glia.dev/glia/internal/state"
)

// Watcher feeds the desired state from Kubernetes: every Node into the
// nodes table; with Services on (kube-proxy replacement), every Service and
// its EndpointSlices into the services table. Values are parsed here, once.
//
// The informers keep slim copies of what they watch (see slim.go): the
// fields the agent reads, nothing else. Work is proportional to what
// changed: a Node heartbeat that changes neither address nor pod CIDR
// writes nothing; a Service or EndpointSlice event marks that Service
// alone, and a Service whose frontends come out as they were writes
// nothing either.
type Watcher struct {
	log      *slog.Logger
	tables   *state.Tables
	local    string       // the node the agent runs on
	svcCIDR  netip.Prefix // config key service-cidr
	factory  informers.SharedInformerFactory
	nodes    cache.SharedIndexInformer
	services cache.SharedIndexInformer
	slices   cache.SharedIndexInformer

	// Health records the watches' errors and their sync.
	Health *APIHealth

	mu      sync.Mutex
	synced  bool
	dirty   map[state.ServiceName]bool
	outside map[state.ServiceName]bool // Services whose ClusterIP is outside svcCIDR
	poke    chan struct{}

	initNodes, initServices func(statedb.WriteTxn)
	initPolicy              func(statedb.WriteTxn) // network policy's tables (policy.go)
	handlers                []cache.ResourceEventHandlerRegistration
}

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	LocalNode string
	// Services watches Services and EndpointSlices (kube-proxy replacement).
	Services bool
	// Policy watches Pods, Namespaces and NetworkPolicies, cluster-wide,
	// for network policy (policy.go).
	Policy bool
	// ServiceCIDR is the cluster's Service range (config key
	// service-cidr): a ClusterIP outside it is programmed all the same,
	// and named in a warning and in `glia status`.
	ServiceCIDR netip.Prefix
}

// sliceServiceIndex indexes EndpointSlices by "namespace/service-name".
const sliceServiceIndex = "service"

// NewWatcher sets up the informers. The nodes (and services) tables count
// as initialised once the informers have synced and their content is in.
func NewWatcher(log *slog.Logger, c *Clients, tables *state.Tables, cfg WatcherConfig, health *APIHealth) *Watcher {
	f := informers.NewSharedInformerFactory(c.Kube, 0)
	w := &Watcher{log: log, tables: tables, local: cfg.LocalNode, svcCIDR: cfg.ServiceCIDR, factory: f, Health: health,
		dirty: map[state.ServiceName]bool{}, outside: map[state.ServiceName]bool{}, poke: make(chan struct{}, 1)}
	txn := tables.DB.WriteTxn(tables.Nodes, tables.Services)
	w.initNodes = tables.Nodes.RegisterInitializer(txn, "k8s")
	if cfg.Services {
		w.initServices = tables.Services.RegisterInitializer(txn, "k8s")
	}
	txn.Commit()

	w.nodes = f.Core().V1().Nodes().Informer()
	_ = w.nodes.SetTransform(slimNode)
	w.register(w.nodes, cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.upsertNode(o) },
		UpdateFunc: func(_, n any) { w.upsertNode(n) },
		DeleteFunc: func(o any) { w.deleteNode(o) },
	})
	if cfg.Services {
		w.services = f.Core().V1().Services().Informer()
		_ = w.services.SetTransform(slimService)
		w.register(w.services, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { w.markService(serviceName(o)) },
			UpdateFunc: func(_, n any) { w.markService(serviceName(n)) },
			DeleteFunc: func(o any) { w.markService(serviceName(o)) },
		})
		w.slices = f.Discovery().V1().EndpointSlices().Informer()
		_ = w.slices.SetTransform(slimSlice)
		_ = w.slices.AddIndexers(cache.Indexers{sliceServiceIndex: func(o any) ([]string, error) {
			if n, ok := sliceServiceName(o); ok {
				return []string{n.String()}, nil
			}
			return nil, nil
		}})
		w.register(w.slices, cache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { w.markService(sliceServiceName(o)) },
			UpdateFunc: func(o, n any) {
				w.markService(sliceServiceName(o))
				w.markService(sliceServiceName(n))
			},
			DeleteFunc: func(o any) { w.markService(sliceServiceName(o)) },
		})
	}
	if cfg.Policy {
		w.watchPolicy()
	}
	return w
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

// unwrap returns the object of a delete event's tombstone.
func unwrap(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}

// NodeFromK8s is the node as the datapath routes to it.
func NodeFromK8s(n *corev1.Node, local string) *state.Node {
	out := &state.Node{Name: n.Name, Local: n.Name == local}
	out.IP, _ = NodeAddress(n)
	if p, err := netip.ParsePrefix(n.Spec.PodCIDR); err == nil && p.Addr().Is4() {
		out.PodCIDR = p.Masked()
	}
	return out
}

func (w *Watcher) upsertNode(o any) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	node := NodeFromK8s(n, w.local)
	node.Status = reconciler.StatusPending()
	txn := w.tables.DB.WriteTxn(w.tables.Nodes)
	defer txn.Commit()
	if old, _, found := w.tables.Nodes.Get(txn, state.NodeByName.Query(node.Name)); found && old.Same(node) {
		return // a heartbeat: nothing the datapath uses changed
	}
	w.tables.Nodes.Insert(txn, node)
}

func (w *Watcher) deleteNode(o any) {
	n, ok := unwrap(o).(*corev1.Node)
	if !ok {
		return
	}
	txn := w.tables.DB.WriteTxn(w.tables.Nodes)
	defer txn.Commit()
	if old, _, found := w.tables.Nodes.Get(txn, state.NodeByName.Query(n.Name)); found {
		w.tables.Nodes.Delete(txn, old)
	}
}

func (w *Watcher) markService(n state.ServiceName, ok bool) {
	if !ok {
		return
	}
	w.mu.Lock()
	w.dirty[n] = true
	w.mu.Unlock()
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

func serviceName(o any) (state.ServiceName, bool) {
	if s, ok := unwrap(o).(*service); ok {
		return state.ServiceName{Namespace: s.namespace, Name: s.name}, true
	}
	return state.ServiceName{}, false
}

func sliceServiceName(o any) (state.ServiceName, bool) {
	es, ok := unwrap(o).(*slice)
	if !ok || es.service == "" {
		return state.ServiceName{}, false
	}
	return state.ServiceName{Namespace: es.namespace, Name: es.service}, true
}

// Start starts the informers, waits for their caches and for the handlers
// to have seen every initial object, and puts every Service in; then it
// keeps the services table current until ctx ends.
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
	txn := w.tables.DB.WriteTxn(w.tables.Nodes, w.tables.Pods, w.tables.Namespaces, w.tables.NetworkPolicies)
	w.initNodes(txn)
	if w.initPolicy != nil {
		w.initPolicy(txn)
	}
	txn.Commit()
	if w.services != nil {
		w.syncServices()
		go w.run(ctx)
	}
	w.Health.Synced()
	return nil
}

// Stop stops the informers.
func (w *Watcher) Stop() { w.factory.Shutdown() }

// run writes the Services marked dirty into the table, in one transaction
// per batch of events.
func (w *Watcher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.poke:
		}
		w.syncServices()
	}
}

// syncServices writes every dirty Service (the first time: every Service,
// and then the table is initialised).
func (w *Watcher) syncServices() {
	w.mu.Lock()
	dirty := w.dirty
	w.dirty = map[state.ServiceName]bool{}
	first := !w.synced
	w.synced = true
	w.mu.Unlock()
	if first {
		for _, k := range w.services.GetStore().ListKeys() {
			ns, name, _ := strings.Cut(k, "/")
			dirty[state.ServiceName{Namespace: ns, Name: name}] = true
		}
	}
	txn := w.tables.DB.WriteTxn(w.tables.Services)
	defer txn.Commit()
	for n := range dirty {
		svc := w.service(n)
		old, _, found := w.tables.Services.Get(txn, state.ServiceByName.Query(n))
		switch {
		case svc == nil && found:
			w.tables.Services.Delete(txn, old)
		case svc == nil:
		case found && old.Same(svc):
		default:
			svc.Status = reconciler.StatusPending()
			w.tables.Services.Insert(txn, svc)
		}
		w.checkCIDR(n, svc)
	}
	if first {
		w.initServices(txn)
	}
}

// checkCIDR warns, once per Service, about a ClusterIP outside service-cidr.
func (w *Watcher) checkCIDR(n state.ServiceName, svc *state.Service) {
	outside := svc != nil && len(svc.Frontends) > 0 && !w.svcCIDR.Contains(svc.Frontends[0].Addr.Addr())
	w.mu.Lock()
	defer w.mu.Unlock()
	if outside == w.outside[n] {
		return
	}
	if outside {
		w.outside[n] = true
		w.log.Warn("Service's ClusterIP lies outside service-cidr: set service-cidr to kube-apiserver's --service-cluster-ip-range",
			"service", n, "clusterIP", svc.Frontends[0].Addr.Addr(), "service-cidr", w.svcCIDR)
		return
	}
	delete(w.outside, n)
}

// OutsideServiceCIDR is the number of Services whose ClusterIP lies outside
// service-cidr.
func (w *Watcher) OutsideServiceCIDR() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.outside)
}

// service translates the Service called n and its EndpointSlices; nil when
// there is no such Service or it has no frontend.
func (w *Watcher) service(n state.ServiceName) *state.Service {
	o, exists, err := w.services.GetStore().GetByKey(n.String())
	if err != nil || !exists {
		return nil
	}
	var slices []*slice
	objs, _ := w.slices.GetIndexer().ByIndex(sliceServiceIndex, n.String())
	for _, so := range objs {
		slices = append(slices, so.(*slice))
	}
	return translate(o.(*service), slices)
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

// TranslateService turns one Service and its EndpointSlices into its
// frontends, as the watcher does with the slim copies it keeps.
func TranslateService(s *corev1.Service, slices []*discoveryv1.EndpointSlice) *state.Service {
	sl := make([]*slice, len(slices))
	for i, es := range slices {
		sl[i] = sliceOf(es)
	}
	return translate(serviceOf(s), sl)
}

// translate makes the frontends of a Service: one per (ClusterIP, port),
// with the NodePort where the Service has one, sorted by protocol and
// address. Headless Services and those without an IPv4 ClusterIP have
// none (nil); only IPv4 slices and addresses become backends.
func translate(s *service, slices []*slice) *state.Service {
	if !s.clusterIP.Is4() {
		return nil
	}
	out := &state.Service{Name: state.ServiceName{Namespace: s.namespace, Name: s.name}}
	for _, p := range s.ports {
		if p.protocol != corev1.ProtocolTCP && p.protocol != corev1.ProtocolUDP {
			continue
		}
		fe := state.Frontend{PortName: p.name, Protocol: string(p.protocol), Addr: netip.AddrPortFrom(s.clusterIP, p.port),
			SessionAffinity: s.affinity}
		if s.nodePorts {
			fe.NodePort = p.nodePort
		}
		fe.Backends = backends(p, slices)
		out.Frontends = append(out.Frontends, fe)
	}
	if len(out.Frontends) == 0 {
		return nil
	}
	sortFrontends(out.Frontends)
	return out
}

func sortFrontends(fes []state.Frontend) {
	slices.SortFunc(fes, func(a, b state.Frontend) int {
		if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
}

// backends are the IPv4 endpoints of the slices for Service port p.
func backends(p servicePort, slices []*slice) []state.Backend {
	var out []state.Backend
	seen := map[netip.AddrPort]bool{}
	for _, es := range slices {
		if !es.ipv4 {
			continue
		}
		var port int32 = -1
		for _, ep := range es.ports {
			if ep.port < 0 || (ep.protocol != "" && ep.protocol != p.protocol) {
				continue
			}
			if ep.name == p.name {
				port = ep.port
			}
		}
		if port < 0 {
			continue
		}
		for _, e := range es.endpoints {
			for _, ip := range e.addrs {
				ap := netip.AddrPortFrom(ip, uint16(port))
				if seen[ap] {
					continue
				}
				seen[ap] = true
				out = append(out, state.Backend{Addr: ap, NodeName: e.node, Ready: e.ready, Terminating: e.terminating})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Compare(out[j].Addr) < 0 })
	return out
}
