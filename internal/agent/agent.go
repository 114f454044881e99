// Package agent is glia-agent's one wiring file: it resolves the node's
// config, decides the datapath and says why, restores endpoints before
// anything else may allocate, then runs the reconcilers that drive the
// kernel toward the desired state read from Kubernetes, and serves the
// local API. Start and stop order live here and nowhere else.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	bpfdp "glia.dev/glia/internal/datapath/bpf"
	"glia.dev/glia/internal/datapath/legacy"
	"glia.dev/glia/internal/endpoint"
	"glia.dev/glia/internal/health"
	"glia.dev/glia/internal/ipam"
	"glia.dev/glia/internal/k8s"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/metrics"
	"glia.dev/glia/internal/status"
)

// resyncInterval is the period of the node pass: every node route
// compared with the kernel, stale endpoints collected, metrics refreshed.
const resyncInterval = 30 * time.Second

// servicePassEvery: one node pass in servicePassEvery is a full pass: it
// also lists every Service from the informers and compares it with what
// the datapath wrote (repairing a change the watch missed), then reads
// the service maps back from the kernel and repairs what drifted there
// (an entry deleted by hand, a lost write). Both cost in proportion to
// the cluster — 50 ms of CPU and a walk of every map at 10k Services —
// which is why they are rare: with resyncInterval, every 5 minutes. A
// Service update that failed brings the full pass forward to the next
// node pass.
const servicePassEvery = 10

// serviceVerifier is a datapath that can read its service maps back.
type serviceVerifier interface {
	VerifyServices(ctx context.Context) error
}

// Agent is a running glia-agent.
type Agent struct {
	log     *slog.Logger
	cfg     Config
	started time.Time

	// What readiness reads; set as the agent gets there.
	live        *liveness
	apiHealth   *k8s.APIHealth
	restored    atomic.Bool // endpoints restored
	initialised atomic.Bool // datapath initialised
	programmed  atomic.Bool // the first full pass programmed the cluster's state

	clients  *k8s.Clients
	conf     *config.Config
	inputs   config.Inputs
	probe    config.KernelProbe
	warnings []config.Warning
	modes    config.Modes
	node     datapath.LocalNode
	dp       datapath.Datapath
	alloc    *ipam.Allocator
	eps      *endpoint.Manager
	watcher  *k8s.Watcher
	ctrl     *controllers
	// servicesFailed: the last Service update, full pass or read-back
	// failed; the next node pass makes a full pass. Only the run loop
	// touches it.
	servicesFailed bool

	healthEP   *health.Endpoint
	prober     *health.Prober
	metrics    *metrics.Metrics
	bpfMetrics *maps.Metrics
}

// Run runs the agent until ctx ends. It refuses to start on a config it
// cannot honour, and says which key and what to change.
func Run(ctx context.Context, log *slog.Logger, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	a := &Agent{log: log, cfg: cfg, started: time.Now(), ctrl: newControllers(), live: newLiveness(), apiHealth: k8s.NewAPIHealth()}
	if cfg.HealthProbeBindAddress != "" {
		// Served from the start: the startup probe reads /healthz while
		// the agent waits for its Node and restores.
		serve, err := serveProbes(ctx, cfg.HealthProbeBindAddress, probeHandler(a.live.check, a.readiness))
		if err != nil {
			return err
		}
		go func() {
			if err := serve(); err != nil {
				a.log.Error("Probe server failed", "addr", cfg.HealthProbeBindAddress, "error", err)
			}
		}()
	}
	if err := a.start(ctx); err != nil {
		return err
	}
	return a.run(ctx)
}

func (a *Agent) start(ctx context.Context) error {
	var err error
	if a.clients, err = k8s.NewClients(a.cfg.Kubeconfig); err != nil {
		return err
	}
	if v, err := a.clients.Kube.Discovery().ServerVersion(); err == nil {
		a.apiHealth.Success(v.GitVersion)
	} else {
		a.apiHealth.Failure(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	node, err := k8s.WaitForNode(waitCtx, a.log, a.clients.Kube, a.cfg.NodeName)
	cancel()
	if err != nil {
		return err
	}

	// Config: defaults < flags < ConfigMap glia-config < matching GliaNodeConfigs.
	in, err := k8s.ConfigInputs(ctx, a.clients, a.cfg.Namespace, node, a.cfg.KeyFlags())
	if err != nil {
		return fmt.Errorf("read config sources: %w", err)
	}
	a.inputs = in
	a.conf, a.warnings, err = config.Resolve(in)
	if err != nil {
		return fmt.Errorf("refusing to start on a config this agent cannot honour:\n%w", err)
	}
	r := a.conf.Typed()
	if a.cfg.LogLevel != nil {
		level := slog.LevelInfo
		if r.Debug {
			level = slog.LevelDebug
		}
		a.cfg.LogLevel.Set(level)
		a.log.Info("Log level set", "level", level, "source", r.Sources[config.KeyDebug].String())
	}
	for _, w := range a.warnings {
		a.log.Warn("Config warning", "key", w.Key, "warning", w.Message)
	}
	probe, err := probeKernel()
	if err != nil {
		a.log.Warn("Kernel probe incomplete; features it could not confirm count as missing", "error", err)
	}
	a.probe = probe
	a.modes = config.Decide(r, probe)
	if err := a.modes.Err(); err != nil {
		return fmt.Errorf("refusing to start: a requested feature cannot work on this node:\n%w", err)
	}
	a.logModes(probe)

	// The node as the datapath sees it.
	nodeIP, err := k8s.NodeAddress(node)
	if err != nil {
		return err
	}
	podCIDR, err := netip.ParsePrefix(node.Spec.PodCIDR)
	if err != nil {
		return fmt.Errorf("node %s: spec.podCIDR %q: %w", node.Name, node.Spec.PodCIDR, err)
	}
	a.node = datapath.LocalNode{Name: node.Name, IP: nodeIP, Device: a.cfg.Device, PodCIDR: podCIDR,
		ClusterCIDR: r.ClusterCIDR, ServiceCIDR: r.ServiceCIDR}
	mtu := r.MTU
	if mtu == 0 {
		if mtu, err = deviceMTU(a.cfg.Device); err != nil {
			return err
		}
		if a.modes.RoutingMode == "tunnel" {
			mtu -= 50 // VXLAN over IPv4
		}
	}
	opts := datapath.Options{
		RoutingMode:          a.modes.RoutingMode,
		AutoDirectNodeRoutes: a.modes.AutoDirectNodeRoutes,
		KubeProxyReplacement: a.modes.KubeProxyReplacement,
		Masquerade:           a.modes.Masquerading != config.MasqDisabled,
		BPFMasquerade:        a.modes.Masquerading == config.MasqBPF,
		HostRoutingBPF:       a.modes.HostRouting.Mode == config.HostRoutingBPF,
		LBAlgorithm:          r.LBAlgorithm,
		StateDir:             filepath.Join(a.cfg.StateDir, "datapath"),
		BPFFSDir:             a.cfg.BPFFSDir,
		MTU:                  mtu,
		SocketLBCgroup:       a.cfg.SocketLBCgroup,
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return err
	}
	if a.dp, err = newDatapath(a.log, a.node, opts); err != nil {
		return err
	}

	// Restore endpoints before any address can be handed out.
	if a.alloc, err = ipam.New(a.log, filepath.Join(a.cfg.StateDir, "ipam.json"), podCIDR, ipam.RouterIP(podCIDR)); err != nil {
		return err
	}
	if a.eps, err = endpoint.NewManager(a.log, endpoint.Config{StateDir: a.cfg.StateDir, PodCIDR: podCIDR, MTU: mtu}, a.alloc,
		keepExtra{Datapath: a.dp, extra: a.extraEndpoints}); err != nil {
		return err
	}
	if err := a.dp.Init(ctx); err != nil {
		return fmt.Errorf("initialise %s datapath: %w", a.dp.Name(), err)
	}
	a.initialised.Store(true)
	if err := a.setupHealthEndpoint(mtu, r.HealthPort); err != nil {
		return err
	}
	if err := a.eps.Restore(ctx); err != nil {
		return fmt.Errorf("restore endpoints: %w", err)
	}
	if err := a.dp.UpsertEndpoint(ctx, a.healthEP.API()); err != nil {
		return fmt.Errorf("program health endpoint: %w", err)
	}
	a.restored.Store(true)
	if err := a.publishCondition(ctx); err != nil {
		a.log.Warn("Could not publish node condition", "error", err)
	}
	return nil
}

// logModes says which datapath runs and, on a fallback, why and how to lift it.
func (a *Agent) logModes(k config.KernelProbe) {
	m := a.modes
	a.log.Info("Datapath decided",
		"hostRouting", m.HostRouting.Mode, "masquerading", m.Masquerading,
		"kubeProxyReplacement", m.KubeProxyReplacement, "routingMode", m.RoutingMode, "kernel", k.KernelVersion)
	if m.HostRouting.Mode == config.HostRoutingLegacy {
		a.log.Info(m.HostRouting.Message(), "subsys", "daemon", "blockingKey", m.HostRouting.BlockingKey)
	}
}

func (a *Agent) publishCondition(ctx context.Context) error {
	bpf := a.modes.HostRouting.Mode == config.HostRoutingBPF
	reason, msg := "BPFHostRouting", "Host Routing: BPF"
	if !bpf {
		reason = "LegacyHostRouting"
		msg = "Host Routing: Legacy: " + a.modes.HostRouting.Message()
	}
	return k8s.SetDatapathCondition(ctx, a.clients.Kube, a.node.Name, bpf, reason, msg)
}

func (a *Agent) run(ctx context.Context) error {
	a.watcher = k8s.NewWatcher(a.clients, a.modes.KubeProxyReplacement, a.apiHealth)
	if err := a.watcher.Start(ctx); err != nil {
		return err
	}
	defer a.watcher.Stop()
	go k8s.Heartbeat(ctx, a.log, a.clients.Kube.Discovery(), a.apiHealth, apiHeartbeat)

	if err := a.startObservability(ctx, a.conf.Typed()); err != nil {
		return err
	}
	ln, err := api.Listen(a.cfg.Socket, api.WithLogger(a.log))
	if err != nil {
		return fmt.Errorf("agent API socket: %w", err)
	}
	srv := api.NewServer(a.apiHandler())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	defer srv.Close()
	a.log.Info("glia-agent ready", "node", a.node.Name, "datapath", a.dp.Name(), "socket", a.cfg.Socket,
		"podCIDR", a.node.PodCIDR, "nodeIP", a.node.IP)

	a.reconcile(ctx, true)
	a.programmed.Store(true)
	a.live.beat()
	go a.removeNotReadyTaint(ctx, func() bool {
		n, ok := a.watcher.Node(a.node.Name)
		return ok && k8s.HasTaint(n, k8s.TaintAgentNotReady)
	})
	if a.dp.Name() == "legacy" {
		// A node switched back from the eBPF datapath: now that the kernel
		// routes every pod and node, detach what the eBPF datapath left.
		if err := bpfdp.Cleanup(a.log, a.cfg.BPFFSDir, a.cfg.Device); err != nil {
			a.log.Warn("Removing eBPF datapath leftovers failed", "error", err)
		}
	}
	// Work follows change: a node's address or pod CIDR changing resyncs
	// node routes; a Service or EndpointSlice changing updates that Service
	// only. A node pass every resyncInterval keeps routes and endpoints
	// true; every servicePassEvery passes, a full pass covers Services.
	tick := time.NewTicker(resyncInterval)
	defer tick.Stop()
	heartbeat := time.NewTicker(heartbeatPeriod)
	defer heartbeat.Stop()
	pass := 0
	for {
		a.live.beat()
		select {
		case <-heartbeat.C:
		case <-ctx.Done():
			a.log.Info("glia-agent stopping; the datapath keeps carrying traffic")
			return errors.Join(a.dp.Close())
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("agent API: %w", err)
		case <-a.watcher.NodesChanged:
			a.syncNodes(ctx)
		case <-a.watcher.ServicesChanged:
			changed := a.watcher.TakeDirtyServices()
			if err := a.ctrl.run(ctx, "update-services", func(ctx context.Context) error {
				return a.dp.UpdateServices(ctx, changed)
			}); err != nil {
				a.servicesFailed = true
				a.log.Warn("Service update failed; the next node pass retries with a full pass", "services", len(changed), "error", err)
			}
		case <-tick.C:
			pass++
			full := a.fullPassDue(pass)
			a.reconcile(ctx, full)
			if full {
				a.verifyServices(ctx)
			}
			a.ctrl.run(ctx, "endpoint-gc", func(ctx context.Context) error {
				released, err := a.eps.CollectStale(ctx)
				if len(released) > 0 {
					a.log.Info("Released addresses of interrupted CNI ADDs", "owners", released)
				}
				return err
			})
		}
	}
}

func (a *Agent) syncNodes(ctx context.Context) {
	if err := a.ctrl.run(ctx, "sync-nodes", func(ctx context.Context) error {
		return a.dp.SyncNodes(ctx, a.watcher.RemoteNodes(a.node.Name))
	}); err != nil {
		a.log.Warn("Node sync failed", "error", err)
	}
}

// reconcile is the node pass — every node route, then the metrics — and,
// with services, the full pass over every Service too. The datapath
// diffs against what it wrote, so an unchanged cluster costs no kernel
// writes.
func (a *Agent) reconcile(ctx context.Context, services bool) {
	a.syncNodes(ctx)
	if services && a.modes.KubeProxyReplacement {
		a.watcher.TakeDirtyServices() // the full pass covers them
		svcs := a.watcher.Services()
		err := a.ctrl.run(ctx, "sync-services", func(ctx context.Context) error {
			return a.dp.SyncServices(ctx, svcs)
		})
		a.servicesFailed = err != nil
		if err != nil {
			a.log.Warn("Service sync failed; the next node pass retries", "error", err)
		}
	}
	a.updateMetrics(ctx)
}

// fullPassDue says whether the pass-th node pass is also a full pass.
func (a *Agent) fullPassDue(pass int) bool {
	return pass%servicePassEvery == 0 || a.servicesFailed
}

// verifyServices reads the service maps back from the kernel and repairs
// drift, if the datapath balances Services and can.
func (a *Agent) verifyServices(ctx context.Context) {
	v, ok := a.dp.(serviceVerifier)
	if !ok || !a.modes.KubeProxyReplacement {
		return
	}
	if err := a.ctrl.run(ctx, "verify-services", v.VerifyServices); err != nil {
		a.servicesFailed = true
		a.log.Warn("Reading the service maps back failed; the next node pass retries", "error", err)
	}
}

func (a *Agent) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(api.PathHealthz, a.serveHealthz)
	mux.HandleFunc(api.PathHealth, a.serveHealth)
	mux.HandleFunc(api.PathConfig, a.serveConfig)
	mux.HandleFunc(api.PathServices, a.serveServices)
	mux.Handle("/", api.NewHandler(a.log, a.eps, func(ctx context.Context) (any, error) { return a.status(ctx) }))
	return mux
}

// status is the agent's answer to `glia status`.
func (a *Agent) status(ctx context.Context) (*api.Status, error) {
	s := &api.Status{NodeName: a.node.Name, Time: time.Now(), Datapath: a.dp.Name(), AgentUptime: time.Since(a.started)}
	s.Readiness = a.readiness()
	s.Ready = ready(s.Readiness)
	s.Kubernetes = a.kubernetesStatus()
	status.FromConfig(s, a.conf, a.warnings, a.modes)
	if a.modes.KubeProxyReplacement {
		s.KubeProxyReplacement.Devices = []string{a.node.Device + " " + a.node.IP.String()}
	}
	if s.Masquerading.Mode == config.MasqBPF {
		s.Masquerading.Device = a.node.Device
		s.Masquerading.CIDR = a.node.ClusterCIDR.String()
	}
	allocs := a.alloc.List()
	s.IPAM = api.IPAMStatus{PodCIDR: a.node.PodCIDR.String(), Allocated: len(allocs), Size: a.alloc.Size()}
	for owner, ip := range allocs {
		s.IPAM.Addresses = append(s.IPAM.Addresses, ip.String()+" ("+owner+")")
	}
	eps, _ := a.eps.ListEndpoints(ctx)
	s.Endpoints = len(eps)
	s.Services = a.watcher.ServiceCount()
	s.Controllers = a.ctrl.list()
	s.ClusterHealth = a.prober.Status()
	return s, nil
}

func deviceMTU(dev string) (int, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("node device %s: %w (set --device)", dev, err)
	}
	return l.Attrs().MTU, nil
}

// newDatapath builds the datapath the decided modes need.
func newDatapath(log *slog.Logger, node datapath.LocalNode, opts datapath.Options) (datapath.Datapath, error) {
	if !opts.KubeProxyReplacement && !opts.BPFMasquerade && !opts.HostRoutingBPF && opts.RoutingMode == "native" {
		return legacy.New(log, node, opts)
	}
	return bpfdp.New(log, node, opts)
}

// keepExtra passes the agent's own endpoints (the health endpoint) along
// with the pods' whenever the endpoint manager syncs the datapath.
type keepExtra struct {
	datapath.Datapath
	extra func() []api.Endpoint
}

func (k keepExtra) SyncEndpoints(ctx context.Context, eps []api.Endpoint) error {
	// A new slice: appending to eps could write into the caller's array.
	return k.Datapath.SyncEndpoints(ctx, slices.Concat(eps, k.extra()))
}
