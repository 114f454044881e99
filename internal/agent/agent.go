// Package agent is glia-agent's one wiring file: it resolves the node's
// config, has config.Decide pick the datapath from the one probe of the
// kernel, builds the desired-state tables (package state), initialises the
// datapath, starts the reconcilers (package reconcile) that drive the
// kernel toward the tables, restores endpoints before anything else may
// allocate, feeds the tables from Kubernetes (package k8s) and the socket
// API (package endpoint), and serves status, metrics, health and probes
// read from the same state. Start and stop order live here and nowhere
// else.
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/statedb"
	"github.com/cilium/statedb/reconciler"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	bpfdp "glia.dev/glia/internal/datapath/bpf"
	"glia.dev/glia/internal/datapath/legacy"
	"glia.dev/glia/internal/datapath/policydp"
	"glia.dev/glia/internal/datapath/probe"
	"glia.dev/glia/internal/endpoint"
	"glia.dev/glia/internal/health"
	"glia.dev/glia/internal/ipam"
	"glia.dev/glia/internal/k8s"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/metrics"
	"glia.dev/glia/internal/policy"
	"glia.dev/glia/internal/reconcile"
	"glia.dev/glia/internal/state"
)

// Reconciler periods.
const (
	// refreshPeriod re-checks every endpoint, node route, sysctl and the
	// device programs against the kernel: a few objects per node, cheap.
	refreshPeriod = 30 * time.Second
	// servicePrunePeriod reads the service maps back from the kernel and
	// repairs what drifted, and removes frontends no Service claims. It
	// walks every service, backend and slot entry (about 20 ms at 10k
	// Services), which is why it is rarer; the masquerade rule, which
	// takes iptables processes to look at, is checked as often.
	servicePrunePeriod = 5 * time.Minute
	// gcPeriod collects addresses of interrupted CNI ADDs and refreshes
	// the metrics.
	gcPeriod = 30 * time.Second
)

// Agent is a running glia-agent.
type Agent struct {
	log     *slog.Logger
	cfg     Config
	started time.Time
	periods map[string]reconcile.Periods

	// What readiness reads; set as the agent gets there.
	live        *liveness
	apiHealth   *k8s.APIHealth
	restored    atomic.Bool // endpoints restored
	initialised atomic.Bool // datapath initialised
	programmed  atomic.Bool // the reconcilers programmed the cluster's state once

	clients  *k8s.Clients
	conf     *config.Config
	inputs   config.Inputs
	probe    config.KernelProbe
	warnings []config.Warning
	modes    config.Modes
	node     datapath.LocalNode
	svcCIDR  netip.Prefix
	// dpStateDir is the datapath's state dir (its handover record).
	dpStateDir string
	dp         datapath.Datapath
	tables     *state.Tables
	recs       atomic.Pointer[reconcile.Set] // set once; the probes read it from the start
	alloc      *ipam.Allocator
	eps        *endpoint.Manager
	watcher    *k8s.Watcher
	ctrl       *controllers

	// Network policy (policy.go).
	policyDP  *policydp.Unit
	policyCtl *policy.Controller
	policyOn  atomic.Bool // enforcement on

	repairsMu sync.Mutex
	repairs   map[string]uint64

	healthEP   *health.Endpoint
	prober     *health.Prober
	metrics    *metrics.Metrics
	bpfMetrics *maps.Metrics

	// pending is the config change waiting for a restart (pending.go).
	pending pendingConfig
}

// Run runs the agent until ctx ends. It refuses to start on a config it
// cannot honour, and says which key and what to change.
func Run(ctx context.Context, log *slog.Logger, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	a := &Agent{log: log, cfg: cfg, started: time.Now(), ctrl: newControllers(), live: newLiveness(),
		apiHealth: k8s.NewAPIHealth(), metrics: metrics.New(), repairs: map[string]uint64{}, periods: defaultPeriods()}
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

func defaultPeriods() map[string]reconcile.Periods {
	every := reconcile.Periods{Refresh: refreshPeriod, Prune: refreshPeriod, RetryMin: 100 * time.Millisecond, RetryMax: 30 * time.Second}
	// The masquerade rule is checked by running iptables (a process per
	// look): as rarely as the service maps.
	rare := reconcile.Periods{Refresh: servicePrunePeriod, Prune: servicePrunePeriod, RetryMin: 100 * time.Millisecond, RetryMax: 30 * time.Second}
	return map[string]reconcile.Periods{
		datapath.ReconcilerEndpoints:  every,
		datapath.ReconcilerNodes:      every,
		datapath.ReconcilerSysctls:    every,
		datapath.ReconcilerMasquerade: rare,
		datapath.ReconcilerPrograms:   every,
		datapath.ReconcilerServices:   {Prune: servicePrunePeriod, RetryMin: 100 * time.Millisecond, RetryMax: 30 * time.Second},
	}
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
	a.setLogLevel(r)
	for _, w := range a.warnings {
		a.log.Warn("Config warning", "key", w.Key, "warning", w.Message)
	}

	// The kernel, probed once; the decision, made once, names the datapath.
	if a.probe, err = probe.Kernel(); err != nil {
		a.log.Warn("Kernel probe incomplete; features it could not confirm count as missing", "error", err)
	}
	a.modes = config.Decide(r, a.probe)
	if err := a.modes.Err(); err != nil {
		return fmt.Errorf("refusing to start: a requested feature cannot work on this node:\n%w", err)
	}
	a.logModes()

	local := k8s.NodeFromK8s(node, node.Name)
	if !local.IP.IsValid() || !local.PodCIDR.IsValid() {
		return fmt.Errorf("node %s: no IPv4 InternalIP or spec.podCIDR %q", node.Name, node.Spec.PodCIDR)
	}
	a.node = datapath.LocalNode{Name: node.Name, IP: local.IP, Device: a.cfg.Device, PodCIDR: local.PodCIDR, ClusterCIDR: r.ClusterCIDR}
	a.svcCIDR = r.ServiceCIDR
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
		Modes:          a.modes,
		LBAlgorithm:    r.LBAlgorithm,
		MapSizes:       datapath.MapSizes{LB: r.LBMapMax, CT: r.CTMapMax, NAT: r.NATMapMax},
		Kernel:         a.probe,
		StateDir:       filepath.Join(a.cfg.StateDir, "datapath"),
		BPFFSDir:       a.cfg.BPFFSDir,
		MTU:            mtu,
		SocketLBCgroup: a.cfg.SocketLBCgroup,
		Drift:          a.drift,
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return err
	}
	a.dpStateDir = opts.StateDir
	// Network policy's maps before the datapath: its programs share them.
	if err := a.startPolicyDatapath(r); err != nil {
		return err
	}
	opts.PolicyMaps = a.policyDP.Maps()
	if a.dp, err = newDatapath(a.log, a.node, opts); err != nil {
		return err
	}

	// The desired state, and who writes it: the endpoint manager (from
	// the socket API), the watcher (from Kubernetes), and Init (the
	// node-wide state) — before any reconciler runs, so that none prunes
	// what is not written yet.
	if a.tables, err = state.New(); err != nil {
		return err
	}
	if err := a.tables.DB.Start(); err != nil {
		return err
	}
	txn := a.tables.DB.WriteTxn(a.tables.Decision)
	a.tables.Decision.Insert(txn, &state.Decision{Node: node.Name, Config: r, Modes: a.modes, Kernel: a.probe})
	txn.Commit()
	if a.alloc, err = ipam.New(a.log, filepath.Join(a.cfg.StateDir, "ipam.json"), local.PodCIDR, ipam.RouterIP(local.PodCIDR)); err != nil {
		return err
	}
	epWriter := reconcile.NewEndpoints(a.tables)
	a.policyCtl = policy.NewController(a.log, a.tables, node.Name,
		policy.Limits{IPCache: a.policyDP.MaxEntries(), Policies: a.policyDP.MaxEntries()})
	epWriter.Policy = a.waitEndpointPolicy
	if a.eps, err = endpoint.NewManager(a.log, endpoint.Config{StateDir: a.cfg.StateDir, PodCIDR: local.PodCIDR, MTU: mtu}, a.alloc, epWriter); err != nil {
		return err
	}
	a.watcher = k8s.NewWatcher(a.log, a.clients, a.tables, k8s.WatcherConfig{LocalNode: node.Name,
		Services: a.modes.KubeProxyReplacement, ServiceCIDR: r.ServiceCIDR, Policy: true}, a.apiHealth)

	host, err := a.initDatapath(ctx)
	if err != nil {
		return fmt.Errorf("initialise %s datapath: %w", a.dp.Name(), err)
	}
	for _, m := range a.mapMigrations() {
		a.metrics.SetMapMigration(m.Map, m.Action, m.Carried, m.Lost, m.FlowsLost)
	}
	a.initialised.Store(true)
	insertAll(a.tables.DB, a.tables.Sysctls, host.Sysctls)
	insertAll(a.tables.DB, a.tables.Masquerade, host.Masquerade)
	insertAll(a.tables.DB, a.tables.Programs, host.Programs)

	recs, err := reconcile.Start(ctx, a.log, a.tables.DB, a.specs(opsOf(a.dp, opts))...)
	if err != nil {
		return err
	}
	a.recs.Store(recs)
	epWriter.Bind(recs)

	// Restore endpoints before any address can be handed out.
	if a.healthEP, err = health.SetupEndpoint(a.log, health.EndpointConfig{
		StateDir: a.cfg.StateDir, NodeName: a.node.Name, IP: ipam.RouterIP(a.node.PodCIDR), MTU: mtu, Port: r.HealthPort,
	}); err != nil {
		return fmt.Errorf("health endpoint: %w", err)
	}
	if err := epWriter.Program(ctx, a.healthEP.State()); err != nil {
		return fmt.Errorf("program health endpoint: %w", err)
	}
	if err := a.eps.Restore(ctx); err != nil {
		return fmt.Errorf("restore endpoints: %w", err)
	}
	a.restored.Store(true)
	if err := a.publishCondition(ctx); err != nil {
		a.log.Warn("Could not publish node condition", "error", err)
	}
	return nil
}

// kernelOps are the reconciler operations of every kind of kernel object
// the node's datapath owns; services and programs are nil where the
// datapath has none.
type kernelOps struct {
	endpoints  reconciler.Operations[*state.Endpoint]
	nodes      reconciler.Operations[*state.Node]
	sysctls    reconciler.Operations[*state.Sysctl]
	masquerade reconciler.Operations[*state.MasqueradeRule]
	services   reconciler.Operations[*state.Service]
	programs   reconciler.Operations[*state.Program]
}

func opsOf(dp datapath.Datapath, opts datapath.Options) kernelOps {
	return kernelOps{
		endpoints: dp.Endpoints(), nodes: dp.Nodes(), services: dp.Services(), programs: dp.Programs(),
		sysctls: datapath.SysctlOps{Opts: opts}, masquerade: datapath.MasqueradeOps{Opts: opts},
	}
}

// specs are the reconcilers of ops, one per kind of kernel object.
func (a *Agent) specs(ops kernelOps) []reconcile.Spec {
	t := a.tables
	specs := []reconcile.Spec{
		reconcile.For(datapath.ReconcilerEndpoints, t.Endpoints, ops.endpoints, a.periods[datapath.ReconcilerEndpoints]),
		reconcile.For(datapath.ReconcilerNodes, t.Nodes, ops.nodes, a.periods[datapath.ReconcilerNodes]),
		reconcile.For(datapath.ReconcilerSysctls, t.Sysctls, ops.sysctls, a.periods[datapath.ReconcilerSysctls]),
		reconcile.For(datapath.ReconcilerMasquerade, t.Masquerade, ops.masquerade, a.periods[datapath.ReconcilerMasquerade]),
	}
	if ops.services != nil {
		specs = append(specs, reconcile.For(datapath.ReconcilerServices, t.Services, ops.services, a.periods[datapath.ReconcilerServices]))
	}
	if ops.programs != nil {
		specs = append(specs, reconcile.For(datapath.ReconcilerPrograms, t.Programs, ops.programs, a.periods[datapath.ReconcilerPrograms]))
	}
	if a.policyDP != nil {
		specs = append(specs, a.policySpecs()...)
	}
	return specs
}

// insertAll puts objs in tbl, pending.
func insertAll[Obj reconcile.Object[Obj]](db *statedb.DB, tbl statedb.RWTable[Obj], objs []Obj) {
	txn := db.WriteTxn(tbl)
	for _, o := range objs {
		tbl.Insert(txn, o.Clone().SetStatus(reconciler.StatusPending()))
	}
	txn.Commit()
}

func (a *Agent) setLogLevel(r config.Resolved) {
	if a.cfg.LogLevel == nil {
		return
	}
	level := slog.LevelInfo
	if r.Debug {
		level = slog.LevelDebug
	}
	a.cfg.LogLevel.Set(level)
	a.log.Info("Log level set", "level", level, "key", config.KeyDebug, "source", r.Sources[config.KeyDebug].String())
}

// logModes says which datapath runs and, on a fallback, why and how to lift it.
func (a *Agent) logModes() {
	m := a.modes
	a.log.Info("Datapath decided", "datapath", m.Datapath,
		"hostRouting", m.HostRouting.Mode, "masquerading", m.Masquerading,
		"kubeProxyReplacement", m.KubeProxyReplacement, "routingMode", m.RoutingMode, "kernel", a.probe.KernelVersion)
	if m.HostRouting.Mode == config.HostRoutingLegacy {
		a.log.Info(m.HostRouting.Message(), "subsys", "daemon", "blockingKey", m.HostRouting.BlockingKey, "fix", m.HostRouting.Fix)
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

// drift records a kernel object a reconciler repaired.
func (a *Agent) drift(rec, object, what string) {
	a.log.Info("Repaired drift from the desired state", "reconciler", rec, "object", object, "drift", what)
	a.metrics.AddRepair(rec)
	a.repairsMu.Lock()
	a.repairs[rec]++
	a.repairsMu.Unlock()
}

func (a *Agent) run(ctx context.Context) error {
	defer a.recs.Load().Stop(context.WithoutCancel(ctx))
	defer a.tables.DB.Stop()
	if err := a.watcher.Start(ctx); err != nil {
		return err
	}
	defer a.watcher.Stop()
	a.runPolicy(ctx)
	a.watchConfig(ctx)
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
	a.log.Info("glia-agent serving", "node", a.node.Name, "datapath", a.dp.Name(), "socket", a.cfg.Socket,
		"podCIDR", a.node.PodCIDR, "nodeIP", a.node.IP)

	if err := a.waitProgrammed(ctx); err != nil {
		return err
	}
	a.programmed.Store(true)
	a.log.Info("glia-agent ready: the cluster's state is programmed")
	if a.dp.Name() == config.DatapathLegacy {
		a.leaveBPF(ctx)
	}
	go a.removeNotReadyTaint(ctx, func() bool {
		n, ok := a.watcher.Node(a.node.Name)
		return ok && k8s.HasTaint(n, k8s.TaintAgentNotReady)
	})

	a.endpointGC(ctx)
	a.updateMetrics()
	gc := time.NewTicker(gcPeriod)
	defer gc.Stop()
	heartbeat := time.NewTicker(heartbeatPeriod)
	defer heartbeat.Stop()
	for {
		a.live.beat()
		select {
		case <-ctx.Done():
			a.log.Info("glia-agent stopping; the datapath keeps carrying traffic")
			a.uninstallIfRemoved()
			return errors.Join(a.dp.Close(), a.policyDP.Close())
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("agent API: %w", err)
		case <-heartbeat.C:
		case <-gc.C:
			a.endpointGC(ctx)
			a.updateMetrics()
		}
	}
}

// endpointGC releases what CNI calls that never completed against the
// agent left: addresses of interrupted ADDs (CollectStale, after its grace
// period) and endpoints whose host veth is gone, their DEL having reached
// the node while the agent was starting or down (SweepGone). It runs once
// the agent serves and then every gcPeriod, which bounds how long such an
// address stays allocated.
func (a *Agent) endpointGC(ctx context.Context) {
	a.ctrl.run(ctx, "endpoint-gc", func(ctx context.Context) error {
		swept, serr := a.eps.SweepGone(ctx)
		if len(swept) > 0 {
			a.log.Info("Deleted endpoints whose CNI DEL did not reach the agent: their host veth is gone", "endpoints", swept)
			a.metrics.AddEndpointsSwept(len(swept))
		}
		released, err := a.eps.CollectStale(ctx)
		if len(released) > 0 {
			a.log.Info("Released addresses of interrupted CNI ADDs", "owners", released)
		}
		return errors.Join(serr, err)
	})
}

// waitProgrammed waits until every reconciler has processed its table as
// the watchers, the restore and Init filled it.
func (a *Agent) waitProgrammed(ctx context.Context) error {
	txn := a.tables.DB.ReadTxn()
	revs := map[string]statedb.Revision{
		datapath.ReconcilerEndpoints:  a.tables.Endpoints.Revision(txn),
		datapath.ReconcilerNodes:      a.tables.Nodes.Revision(txn),
		datapath.ReconcilerSysctls:    a.tables.Sysctls.Revision(txn),
		datapath.ReconcilerMasquerade: a.tables.Masquerade.Revision(txn),
	}
	if a.dp.Services() != nil {
		revs[datapath.ReconcilerServices] = a.tables.Services.Revision(txn)
	}
	if a.dp.Programs() != nil {
		revs[datapath.ReconcilerPrograms] = a.tables.Programs.Revision(txn)
	}
	for name, rev := range revs {
		if err := a.recs.Load().WaitReconciled(ctx, name, rev); err != nil {
			return fmt.Errorf("waiting for the %s reconciler: %w", name, err)
		}
	}
	return nil
}

func deviceMTU(dev string) (int, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("node device %s: %w (set --device)", dev, err)
	}
	return l.Attrs().MTU, nil
}

// newDatapath builds the datapath config.Decide named.
func newDatapath(log *slog.Logger, node datapath.LocalNode, opts datapath.Options) (datapath.Datapath, error) {
	switch opts.Modes.Datapath {
	case config.DatapathLegacy:
		return legacy.New(log, node, opts)
	case config.DatapathBPF:
		return bpfdp.New(log, node, opts)
	}
	return nil, fmt.Errorf("no datapath %q", opts.Modes.Datapath)
}
