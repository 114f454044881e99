package noderunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// Run runs the node runner until ctx ends. Pods keep running when it
// returns; a later Run re-adopts them.
func Run(ctx context.Context, log *slog.Logger, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	// Before anything else: the node's view of the file system, in the
	// runner's own mount namespace (refused outside one).
	if err := setupNodeMounts(cfg.binds()); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	rc.UserAgent = "glia-lab-runner/" + cfg.Node
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("build client: %w", err)
	}
	sb, err := NewHostSandbox(log, cfg)
	if err != nil {
		return err
	}
	r, err := newRunner(log, cfg, client, sb, sb.NetworkReady)
	if err != nil {
		return err
	}
	return r.run(ctx)
}

// runner holds the node runner's state; one per node.
type runner struct {
	log      *slog.Logger
	cfg      Config
	client   kubernetes.Interface
	sb       Sandbox
	store    *Store
	id       *nodeIdentity
	selfExe  string
	coredns  string
	now      func() time.Time
	tick     time.Duration // pod worker wake-up period (probes, restarts)
	maxGrace time.Duration
	pods     podIndex // for the kubelet API
	// mounter, tokens and imageBin serve pod volumes and images
	// (volumes.go, token.go, rootfs.go).
	mounter  nodeMounter
	tokens   *tokenManager
	imageBin string

	ctx     context.Context
	mu      sync.Mutex
	workers map[types.UID]*podWorker
	stored  map[types.UID]*PodState
	wg      sync.WaitGroup
}

func newRunner(log *slog.Logger, cfg Config, client kubernetes.Interface, sb Sandbox, networkReady func() error) (*runner, error) {
	self, err := cfg.selfExe()
	if err != nil {
		return nil, err
	}
	store, err := NewStore(podsDir(cfg.StateDir))
	if err != nil {
		return nil, err
	}
	for _, d := range []string{logsDir(cfg.StateDir), podDataDir(cfg.StateDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	taints, err := ParseTaints(cfg.RegisterWithTaints)
	if err != nil {
		return nil, err
	}
	return &runner{
		log:      log.With("subsys", "noderunner", "node", cfg.Node),
		cfg:      cfg,
		client:   client,
		sb:       sb,
		store:    store,
		mounter:  hostMounter{},
		tokens:   newTokenManager(client, time.Now),
		imageBin: cfg.imageBinDir(self),
		id:       &nodeIdentity{name: cfg.Node, ip: cfg.NodeIP, taints: taints, kubeletPort: cfg.kubeletPort(), networkReady: networkReady, now: time.Now},
		selfExe:  self,
		coredns:  cfg.coreDNSBinary(self),
		now:      time.Now,
		tick:     time.Second,
		maxGrace: 5 * time.Second,
		workers:  map[types.UID]*podWorker{},
		stored:   map[types.UID]*PodState{},
	}, nil
}

func logsDir(stateDir string) string    { return filepath.Join(stateDir, "logs") }
func podDataDir(stateDir string) string { return filepath.Join(stateDir, "pod-data") }

// LogPath is the file a container's stdout and stderr go to.
func LogPath(stateDir, namespace, pod, container string) string {
	return filepath.Join(logsDir(stateDir), namespace+"_"+pod+"_"+container+".log")
}

func (r *runner) run(ctx context.Context) error {
	r.ctx = ctx
	states, err := r.store.Load()
	if err != nil {
		r.log.Warn("some pod states could not be read", "err", err)
	}
	for _, st := range states {
		r.stored[types.UID(st.UID)] = st
	}
	if len(states) > 0 {
		r.log.Info("pod states found; re-adopting", "pods", len(states))
	}
	// The kubelet API is up before the node registers with its port.
	if err := r.startKubeletAPI(ctx); err != nil {
		return err
	}

	registered := make(chan struct{})
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.nodeLoop(ctx, registered)
	}()
	if r.cfg.KubeProxyClusterCIDR != "" {
		kp := r.newKubeProxy()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			kp.run(ctx)
		}()
	}

	factory := informers.NewSharedInformerFactoryWithOptions(r.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", r.cfg.Node).String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	r.pods.set(inf.GetIndexer())
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.handle(obj, false) },
		UpdateFunc: func(_, obj any) { r.handle(obj, false) },
		DeleteFunc: func(obj any) { r.handle(obj, true) },
	}); err != nil {
		return fmt.Errorf("add pod handler: %w", err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		// Only a cancelled ctx ends the wait: a normal shutdown.
		factory.Shutdown()
		r.wg.Wait()
		return nil
	}
	// Stored pods the API no longer has: tear them down.
	r.mu.Lock()
	for uid, st := range r.stored {
		r.log.Info("pod gone while the runner was down; tearing it down", "pod", st.Namespace+"/"+st.Name, "uid", uid)
		w := r.newWorker(uid, st)
		w.update(nil, true)
		delete(r.stored, uid)
	}
	r.mu.Unlock()

	<-ctx.Done()
	factory.Shutdown()
	r.wg.Wait()
	return nil
}

// handle routes an informer event to the pod's worker, starting one when
// needed. Called from informer goroutines.
func (r *runner) handle(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName != r.cfg.Node {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return
	}
	w := r.workers[pod.UID]
	if w == nil {
		st := r.stored[pod.UID]
		delete(r.stored, pod.UID)
		switch {
		case st != nil:
			// Re-adopt (or clean up) a pod from an earlier runner.
		case deleted:
			return
		case pod.DeletionTimestamp != nil:
			// Never started here: nothing to stop.
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.deletePodObject(pod)
			}()
			return
		case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
			return
		}
		w = r.newWorker(pod.UID, st)
	}
	w.update(pod.DeepCopy(), deleted)
}

// newWorker starts a worker; r.mu must be held.
func (r *runner) newWorker(uid types.UID, st *PodState) *podWorker {
	w := &podWorker{
		r:        r,
		uid:      uid,
		st:       st,
		notify:   make(chan struct{}, 1),
		exits:    make(chan exitEvent, 8),
		procs:    map[string]Process{},
		probes:   map[string]*probeState{},
		restarts: map[string]time.Time{},
		crashes:  map[string]int{},
		waiting:  map[string]waitReason{},
	}
	r.workers[uid] = w
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		w.run(r.ctx)
		r.mu.Lock()
		if r.workers[uid] == w {
			delete(r.workers, uid)
		}
		r.mu.Unlock()
	}()
	return w
}

// deletePodObject removes a terminated pod from the API server (grace
// period 0), as the kubelet does once its containers are gone.
func (r *runner) deletePodObject(pod *corev1.Pod) {
	err := r.client.CoreV1().Pods(pod.Namespace).Delete(r.ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: ptr.To(pod.UID)},
	})
	switch {
	case err == nil:
		r.log.Info("pod deleted", "pod", pod.Namespace+"/"+pod.Name)
	case apierrors.IsNotFound(err), apierrors.IsConflict(err), errors.Is(err, context.Canceled):
	default:
		r.log.Warn("delete pod object", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}

func podKey(ns, name string) string { return ns + "/" + name }
