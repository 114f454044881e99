package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"glia.dev/glia/internal/api"
)

// Prober defaults.
const (
	DefaultBaseInterval = 10 * time.Second
	// PerNodeInterval makes the interval grow with the cluster: a round
	// starts at most every max(BaseInterval, nodes × PerNodeInterval).
	PerNodeInterval = 50 * time.Millisecond
	DefaultTimeout  = 3 * time.Second
	DefaultWorkers  = 8
)

// Recorder receives the results of every probe round; *metrics.Metrics
// implements it. target is TargetHost or TargetEndpoint, probe ProbeICMP
// or ProbeHTTP.
type Recorder interface {
	ObserveRTT(node, target, probe string, rtt time.Duration, ok bool)
	SetReachable(node string, ok bool)
	// ForgetNode drops the series of a node no longer probed.
	ForgetNode(node string)
}

// ProberConfig configures a Prober.
type ProberConfig struct {
	// NodeName is the node the prober runs on.
	NodeName string
	// Port is the health port of every node and health endpoint.
	Port int
	// BaseInterval is the shortest time between the starts of two rounds.
	BaseInterval time.Duration
	// Timeout bounds each probe.
	Timeout time.Duration
	// Workers bounds the probes in flight.
	Workers int
	// Netns, when set, is the path of the network namespace probes are
	// sent from; by default the caller's (the agent runs in the node's).
	Netns string
	// Recorder, when set, receives every round's results.
	Recorder Recorder
}

func (c ProberConfig) withDefaults() ProberConfig {
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.BaseInterval == 0 {
		c.BaseInterval = DefaultBaseInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	return c
}

// Validate checks the config after defaults are applied.
func (c ProberConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.NodeName == "":
		return errors.New("health prober: node name is empty")
	case c.Port < 1 || c.Port > 65535:
		return fmt.Errorf("health prober: port %d is outside 1..65535", c.Port)
	case c.BaseInterval < 0:
		return fmt.Errorf("health prober: interval %v is negative", c.BaseInterval)
	case c.Timeout < 0:
		return fmt.Errorf("health prober: timeout %v is negative", c.Timeout)
	case c.Workers < 0:
		return fmt.Errorf("health prober: workers %d is negative", c.Workers)
	}
	return nil
}

// interval is the time between the starts of two rounds for n nodes.
func interval(base time.Duration, n int) time.Duration {
	return max(base, time.Duration(n)*PerNodeInterval)
}

// Prober probes every node of the cluster in rounds.
type Prober struct {
	log     *slog.Logger
	cfg     ProberConfig
	targets func() []Target
	ping    func(ctx context.Context, dst netip.Addr) (time.Duration, error)
	client  *http.Client
	trigger chan struct{}

	roundMu sync.Mutex // one round at a time

	mu     sync.Mutex
	report Report
	nodes  int             // targets in the last round
	known  map[string]bool // node → reachable in the last round
}

// NewProber returns a prober of the nodes targets returns; targets is
// called at the start of every round.
func NewProber(log *slog.Logger, cfg ProberConfig, targets func() []Target) (*Prober, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Prober{
		log:     log.With("subsys", "health"),
		cfg:     cfg,
		targets: targets,
		ping:    newPinger(cfg.Netns).ping,
		trigger: make(chan struct{}, 1),
		known:   map[string]bool{},
	}
	p.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // never through a proxy
			DialContext:            p.dial,
			DisableKeepAlives:      true, // every probe opens a connection
			ResponseHeaderTimeout:  cfg.Timeout,
			MaxResponseHeaderBytes: 16 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return p, nil
}

func (p *Prober) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if p.cfg.Netns == "" {
		return d.DialContext(ctx, network, addr)
	}
	var c net.Conn
	err := ns.WithNetNSPath(p.cfg.Netns, func(ns.NetNS) error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Interval is the current time between the starts of two rounds:
// max(BaseInterval, nodes × 50ms) for the nodes of the last round.
func (p *Prober) Interval() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return interval(p.cfg.BaseInterval, p.nodes)
}

// Report returns the last complete round.
func (p *Prober) Report() Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.report
	r.Nodes = append([]NodeStatus(nil), r.Nodes...)
	return r
}

// Status is the summary of the last round for api.Status.ClusterHealth:
// nil until a round has completed.
func (p *Prober) Status() *api.ClusterHealthStatus {
	r := p.Report()
	if r.ProbeTime.IsZero() {
		return nil
	}
	s := r.Summary()
	return &s
}

// Trigger asks Run to start a round now (e.g. when nodes changed) without
// waiting for the interval. It does not block.
func (p *Prober) Trigger() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// Run probes in rounds until ctx is done; it returns nil then.
func (p *Prober) Run(ctx context.Context) error {
	for {
		p.ProbeOnce(ctx)
		t := time.NewTimer(p.Interval())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-p.trigger:
			t.Stop()
		case <-t.C:
		}
	}
}

type probeJob struct {
	node     int
	endpoint bool
	http     bool
}

// ProbeOnce runs one round now, records it as the last report and returns
// it. A round cut short by ctx is returned but not recorded.
func (p *Prober) ProbeOnce(ctx context.Context) Report {
	p.roundMu.Lock()
	defer p.roundMu.Unlock()

	start := time.Now()
	targets := dedupe(p.targets())
	nodes := make([]NodeStatus, len(targets))
	var jobs []probeJob
	for i, t := range targets {
		nodes[i] = NodeStatus{Name: t.Node, Local: t.Local, Host: PathStatus{Addr: t.HostIP}}
		jobs = append(jobs, probeJob{node: i}, probeJob{node: i, http: true})
		if t.EndpointIP.IsValid() {
			nodes[i].Endpoint = &PathStatus{Addr: t.EndpointIP}
			jobs = append(jobs, probeJob{node: i, endpoint: true}, probeJob{node: i, endpoint: true, http: true})
		}
	}

	sem := make(chan struct{}, p.cfg.Workers)
	var wg sync.WaitGroup
	for _, j := range jobs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			path := &nodes[j.node].Host
			if j.endpoint {
				path = nodes[j.node].Endpoint
			}
			if j.http {
				path.HTTP = p.probeHTTP(ctx, path.Addr)
			} else {
				path.ICMP = p.probeICMP(ctx, path.Addr)
			}
		}()
	}
	wg.Wait()

	sortNodes(nodes)
	rep := Report{ProbeTime: start.UTC(), Nodes: nodes}
	if ctx.Err() != nil {
		return rep
	}
	p.mu.Lock()
	p.nodes = len(nodes)
	rep.Interval = interval(p.cfg.BaseInterval, p.nodes)
	p.report = rep
	prev := p.known
	p.known = make(map[string]bool, len(nodes))
	for _, n := range nodes {
		p.known[n.Name] = n.Reachable()
	}
	p.mu.Unlock()

	p.record(rep, prev)
	return rep
}

// record logs changes of reachability and feeds the Recorder.
func (p *Prober) record(rep Report, prev map[string]bool) {
	for _, n := range rep.Nodes {
		ok := n.Reachable()
		was, seen := prev[n.Name]
		switch {
		case !ok && (!seen || was):
			p.log.Warn("node unreachable", "node", n.Name, "problems", strings.Join(n.Problems(), "; "))
		case ok && seen && !was:
			p.log.Info("node reachable again", "node", n.Name)
		}
	}
	r := p.cfg.Recorder
	if r == nil {
		return
	}
	current := make(map[string]bool, len(rep.Nodes))
	for _, n := range rep.Nodes {
		current[n.Name] = true
		paths := []struct {
			target string
			path   *PathStatus
		}{{TargetHost, &n.Host}, {TargetEndpoint, n.Endpoint}}
		for _, pa := range paths {
			if pa.path == nil {
				continue
			}
			r.ObserveRTT(n.Name, pa.target, ProbeICMP, pa.path.ICMP.RTT, pa.path.ICMP.OK)
			r.ObserveRTT(n.Name, pa.target, ProbeHTTP, pa.path.HTTP.RTT, pa.path.HTTP.OK)
		}
		r.SetReachable(n.Name, n.Reachable())
	}
	for name := range prev {
		if !current[name] {
			r.ForgetNode(name)
		}
	}
}

// dedupe drops targets without a name and later duplicates of a name.
func dedupe(ts []Target) []Target {
	seen := make(map[string]bool, len(ts))
	out := make([]Target, 0, len(ts))
	for _, t := range ts {
		if t.Node == "" || seen[t.Node] {
			continue
		}
		seen[t.Node] = true
		out = append(out, t)
	}
	return out
}

func (p *Prober) probeICMP(ctx context.Context, addr netip.Addr) ProbeResult {
	if !addr.Is4() {
		return ProbeResult{Err: "no IPv4 address"}
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	rtt, err := p.ping(ctx, addr)
	if err != nil {
		return ProbeResult{Err: describe(err, p.cfg.Timeout)}
	}
	return ProbeResult{OK: true, RTT: rtt}
}

func (p *Prober) probeHTTP(ctx context.Context, addr netip.Addr) ProbeResult {
	if !addr.Is4() {
		return ProbeResult{Err: "no IPv4 address"}
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	u := "http://" + netip.AddrPortFrom(addr, uint16(p.cfg.Port)).String() + HelloPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return ProbeResult{Err: err.Error()}
	}
	req.Header.Set("User-Agent", "glia-health/"+p.cfg.NodeName)
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return ProbeResult{Err: describe(err, p.cfg.Timeout)}
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	rtt := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return ProbeResult{Err: "unexpected status " + resp.Status}
	}
	if err != nil {
		return ProbeResult{Err: describe(err, p.cfg.Timeout)}
	}
	return ProbeResult{OK: true, RTT: rtt}
}

// describe turns a probe error into the short reason users read:
// "connection refused", "timeout after 3s", "host unreachable".
func describe(err error, timeout time.Duration) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout after " + timeout.String()
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, errUnreachable):
		// "destination unreachable: host unreachable (from 198.18.0.11)"
		_, rest, _ := strings.Cut(err.Error(), errUnreachable.Error()+": ")
		if rest != "" {
			return rest
		}
		return errUnreachable.Error()
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
