package k8s

import (
	"context"
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"glia.dev/glia/internal/config"
)

// ConfigWatch watches the agent's config sources after it started on them
// — ConfigMap glia-config and the GliaNodeConfigs of its namespace, and its
// own Node's labels (a GliaNodeConfig selects nodes by label) — so the
// agent can tell at once that its effective config would change at its
// next restart. It reads exactly what ConfigInputs reads at start: the
// ConfigMap and the Node by name (list/watch with a metadata.name field
// selector), the GliaNodeConfigs of the namespace.
type ConfigWatch struct {
	ns, node string
	kube     informers.SharedInformerFactory // ConfigMap glia-config
	nodeF    informers.SharedInformerFactory // the agent's Node
	dyn      dynamicinformer.DynamicSharedInformerFactory
	cms      cache.SharedIndexInformer
	nodes    cache.SharedIndexInformer
	ncs      cache.SharedIndexInformer
	changed  chan struct{}
}

// NewConfigWatch sets up the informers of node's config sources in
// namespace ns. Nothing runs before Start.
func NewConfigWatch(c *Clients, ns, node string) *ConfigWatch {
	byName := func(name string) informers.SharedInformerOption {
		return informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		})
	}
	w := &ConfigWatch{ns: ns, node: node, changed: make(chan struct{}, 1),
		kube:  informers.NewSharedInformerFactoryWithOptions(c.Kube, 0, informers.WithNamespace(ns), byName(config.DefaultConfigMapName)),
		nodeF: informers.NewSharedInformerFactoryWithOptions(c.Kube, 0, byName(node)),
		dyn:   dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.Dynamic, 0, ns, nil),
	}
	w.cms = w.kube.Core().V1().ConfigMaps().Informer()
	w.nodes = w.nodeF.Core().V1().Nodes().Informer()
	// The Node's labels are all this watch reads of it: a heartbeat
	// (status) changes nothing it keeps.
	_ = w.nodes.SetTransform(func(o any) (any, error) {
		n, ok := o.(*corev1.Node)
		if !ok {
			return o, nil
		}
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, ResourceVersion: n.ResourceVersion, Labels: n.Labels}}, nil
	})
	w.ncs = w.dyn.ForResource(config.NodeConfigGVR).Informer()
	poke := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.poke() },
		UpdateFunc: func(any, any) { w.poke() },
		DeleteFunc: func(any) { w.poke() },
	}
	for _, inf := range []cache.SharedIndexInformer{w.cms, w.nodes, w.ncs} {
		_, _ = inf.AddEventHandler(poke)
	}
	return w
}

func (w *ConfigWatch) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Changed receives after any change of the sources (coalesced: one
// receive may stand for many events).
func (w *ConfigWatch) Changed() <-chan struct{} { return w.changed }

// Start starts the informers; they stop when ctx ends.
func (w *ConfigWatch) Start(ctx context.Context) {
	w.kube.Start(ctx.Done())
	w.nodeF.Start(ctx.Done())
	w.dyn.Start(ctx.Done())
}

// Synced reports whether every informer has listed once. Inputs before
// that would report sources as missing that are merely not read yet.
// Without the GliaNodeConfig CRD the node configs never sync.
func (w *ConfigWatch) Synced() bool {
	return w.cms.HasSynced() && w.nodes.HasSynced() && w.ncs.HasSynced()
}

// Inputs are the config sources as the informers see them now, with the
// agent's flags, as ConfigInputs returns them. The error names every
// GliaNodeConfig that does not parse and a Node that is gone.
func (w *ConfigWatch) Inputs(flags map[string]string) (config.Inputs, error) {
	in := config.Inputs{Flags: flags}
	var errs []error
	// Filtered by name here too: the field selector is what the API
	// server honours, this is what the code relies on.
	for _, o := range w.cms.GetStore().List() {
		cm, ok := o.(*corev1.ConfigMap)
		if ok && cm.Namespace == w.ns && cm.Name == config.DefaultConfigMapName {
			in.ConfigMap = cm.Data
			in.ConfigMapName = w.ns + "/" + config.DefaultConfigMapName
		}
	}
	found := false
	for _, o := range w.nodes.GetStore().List() {
		if n, ok := o.(*corev1.Node); ok && n.Name == w.node {
			in.NodeLabels, found = n.Labels, true
		}
	}
	if !found {
		errs = append(errs, fmt.Errorf("node %s is not in the API server: its labels, which select GliaNodeConfigs, are unknown", w.node))
	}
	for _, o := range w.ncs.GetStore().List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok || u.GetNamespace() != w.ns {
			continue
		}
		nc, err := config.NodeConfigFromUnstructured(u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		in.NodeConfigs = append(in.NodeConfigs, nc)
	}
	sort.Slice(in.NodeConfigs, func(i, j int) bool { return in.NodeConfigs[i].Name < in.NodeConfigs[j].Name })
	return in, errors.Join(errs...)
}
