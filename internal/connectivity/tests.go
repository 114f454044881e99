package connectivity

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/health"
	"glia.dev/glia/internal/metrics"
)

// Test names.
const (
	TestHealth            = "health"
	TestPodToPodSameNode  = "pod-to-pod-same-node"
	TestPodToPodCrossNode = "pod-to-pod-cross-node"
	TestClientToClient    = "client-to-client"
	TestPodToService      = "pod-to-service"
	TestPodToSelf         = "pod-to-self-via-service"
	TestLocalNodePort     = "pod-to-local-nodeport"
	TestRemoteNodePort    = "pod-to-remote-nodeport"
	TestPodToHost         = "pod-to-host"
	TestHostToPod         = "host-to-pod"
	TestPodToWorld        = "pod-to-world"
	TestDNS               = "dns"
	TestConnDisrupt       = "no-interrupted-connections"
	TestDrops             = "no-unexpected-packet-drops"
)

// Tests returns the connectivity tests in the order they run. The drop test
// runs last: it compares the agents' drop counters read before the first
// test (BaselineDrops) with their values at its end.
func (e *Env) Tests() []Test {
	return []Test{
		{TestHealth, e.testHealth},
		{TestPodToPodSameNode, e.testPodToPodSameNode},
		{TestPodToPodCrossNode, e.testPodToPodCrossNode},
		{TestClientToClient, e.testClientToClient},
		{TestPodToService, e.testPodToService},
		{TestPodToSelf, e.testPodToSelf},
		{TestLocalNodePort, func(ctx context.Context, t *T) { e.testNodePort(ctx, t, true) }},
		{TestRemoteNodePort, func(ctx context.Context, t *T) { e.testNodePort(ctx, t, false) }},
		{TestPodToHost, e.testPodToHost},
		{TestHostToPod, e.testHostToPod},
		{TestPodToWorld, e.testPodToWorld},
		{TestDNS, e.testDNS},
		{TestDrops, e.testDrops},
	}
}

func (e *Env) clients() []Pod { return []Pod{e.W.Client, e.W.Client2} }

func (e *Env) echoPods() []Pod {
	out := []Pod{e.W.EchoSame}
	if e.W.EchoOther != nil {
		out = append(out, *e.W.EchoOther)
	}
	return out
}

func (e *Env) podToPod(ctx context.Context, t *T, dst Pod) {
	for _, c := range e.clients() {
		t.Action("curl", c.String(), fmt.Sprintf("%s/%s (%s, %s:%d)", dst.Namespace, dst.Name, dst.Node, dst.IP, e.P.EchoPort),
			func(ctx context.Context, r *ActionResult) error {
				_, err := e.curlEcho(ctx, r, &c, "", httpURL(dst.IP, e.P.EchoPort, "/"), dst.Name)
				if err != nil && c.Node != dst.Node {
					return fmt.Errorf("%w (path: %s -> %s, pod CIDR %s)", err, c.Node, dst.Node, e.node(dst.Node).PodCIDR)
				}
				return err
			})
	}
}

func (e *Env) testPodToPodSameNode(ctx context.Context, t *T) {
	e.podToPod(ctx, t, e.W.EchoSame)
}

func (e *Env) testPodToPodCrossNode(ctx context.Context, t *T) {
	if e.W.EchoOther == nil {
		t.Skip("the cluster has a single node: no pod runs on another node")
	}
	e.podToPod(ctx, t, *e.W.EchoOther)
}

func (e *Env) testClientToClient(ctx context.Context, t *T) {
	pairs := [][2]Pod{{e.W.Client, e.W.Client2}, {e.W.Client2, e.W.Client}}
	for _, p := range pairs {
		src, dst := p[0], p[1]
		t.Action("ping", src.String(), dst.String(), func(ctx context.Context, r *ActionResult) error {
			_, err := e.run(ctx, r, &src, "", append(append([]string(nil), e.P.PingCommand...), dst.IP))
			return err
		})
	}
}

func svcDest(s *Service) string {
	return fmt.Sprintf("service %s (%s:%d)", s.Name, s.ClusterIP, s.Port)
}

func (e *Env) testPodToService(ctx context.Context, t *T) {
	ns := []string{NameEchoSameNode, NameEchoOtherNode}
	for _, c := range e.clients() {
		for _, name := range ns {
			s := e.W.Services[name]
			if s == nil {
				continue
			}
			t.Action("curl", c.String(), svcDest(s), func(ctx context.Context, r *ActionResult) error {
				_, err := e.curlEcho(ctx, r, &c, "", httpURL(s.ClusterIP, s.Port, "/"), s.Backends[0].Name)
				return err
			})
		}
		// Every backend of the Service with all echo pods answers.
		s := e.W.Services[NameEcho]
		t.Action("curl-all-backends", c.String(), svcDest(s)+" every backend", func(ctx context.Context, r *ActionResult) error {
			return e.allBackends(ctx, r, c, s)
		})
	}
}

// allBackends sends requests to s until every backend has answered.
func (e *Env) allBackends(ctx context.Context, r *ActionResult, c Pod, s *Service) error {
	want := map[string]bool{}
	for _, b := range s.Backends {
		want[b.Name] = true
	}
	seen := map[string]int{}
	var lastErr error
	n := e.P.ServiceRequests
	if n < len(want) {
		n = len(want)
	}
	for i := 0; i < n; i++ {
		got, err := e.curlEcho(ctx, r, &c, "", httpURL(s.ClusterIP, s.Port, "/"), "")
		if err != nil {
			lastErr = err
			break
		}
		if !want[got] {
			return fmt.Errorf("answered by %q, which is not a backend of %s", got, s.Name)
		}
		seen[got]++
		if len(seen) == len(want) {
			r.Output = fmt.Sprintf("%d requests, answered by %s", i+1, formatSeen(seen))
			return nil
		}
	}
	var missing []string
	for b := range want {
		if seen[b] == 0 {
			missing = append(missing, b)
		}
	}
	sort.Strings(missing)
	if lastErr != nil {
		return fmt.Errorf("after answers from %s: %w", formatSeen(seen), lastErr)
	}
	return fmt.Errorf("%d requests never reached backend %s (answered by %s)", n, strings.Join(missing, ", "), formatSeen(seen))
}

func formatSeen(seen map[string]int) string {
	if len(seen) == 0 {
		return "none"
	}
	var parts []string
	for b, n := range seen {
		parts = append(parts, fmt.Sprintf("%s×%d", b, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func (e *Env) testPodToSelf(ctx context.Context, t *T) {
	for _, p := range e.echoPods() {
		name := NameEchoSameNode
		if e.W.EchoOther != nil && p.Name == e.W.EchoOther.Name {
			name = NameEchoOtherNode
		}
		s := e.W.Services[name]
		t.Action("curl", p.String(), svcDest(s)+" (itself, hairpin)", func(ctx context.Context, r *ActionResult) error {
			_, err := e.curlEcho(ctx, r, &p, "", httpURL(s.ClusterIP, s.Port, "/"), p.Name)
			return err
		})
	}
}

func (e *Env) nodePortServices() []*Service {
	var out []*Service
	for _, name := range []string{NameEchoSameNode, NameEchoOtherNode} {
		if s := e.W.Services[name]; s != nil && s.NodePort > 0 {
			out = append(out, s)
		}
	}
	return out
}

func (e *Env) testNodePort(ctx context.Context, t *T, local bool) {
	if !local && len(e.Nodes) < 2 {
		t.Skip("the cluster has a single node: there is no remote node")
	}
	for _, c := range e.clients() {
		for _, n := range e.Nodes {
			if (n.Name == c.Node) != local {
				continue
			}
			if why := n.nodePortUnsupported(e.KubeProxy); why != "" {
				t.SkipScenario(c.Name+"->"+n.Name, why)
				continue
			}
			if n.IP == "" {
				t.SkipScenario(c.Name+"->"+n.Name, "node "+n.Name+" has no InternalIP")
				continue
			}
			for _, s := range e.nodePortServices() {
				t.Action("curl", c.String(), fmt.Sprintf("nodeport %s of %s (%s:%d)", s.Name, n.Name, n.IP, s.NodePort),
					func(ctx context.Context, r *ActionResult) error {
						_, err := e.curlEcho(ctx, r, &c, "", httpURL(n.IP, s.NodePort, "/"), s.Backends[0].Name)
						return err
					})
			}
		}
	}
}

func (e *Env) testPodToHost(ctx context.Context, t *T) {
	for _, c := range e.clients() {
		for _, n := range e.Nodes {
			t.Action("curl", c.String(), fmt.Sprintf("host %s (%s:%d)", n.Name, n.IP, e.P.HostPort), func(ctx context.Context, r *ActionResult) error {
				_, err := e.curlEcho(ctx, r, &c, "", httpURL(n.IP, e.P.HostPort, "/"), "")
				return err
			})
		}
	}
}

func (e *Env) testHostToPod(ctx context.Context, t *T) {
	for _, n := range e.Nodes {
		for _, p := range e.echoPods() {
			t.Action("curl", fmt.Sprintf("host %s (%s)", n.Name, n.IP), fmt.Sprintf("%s/%s (%s, %s:%d)", p.Namespace, p.Name, p.Node, p.IP, e.P.EchoPort),
				func(ctx context.Context, r *ActionResult) error {
					_, err := e.curlEcho(ctx, r, nil, n.Name, httpURL(p.IP, e.P.EchoPort, "/"), p.Name)
					return err
				})
		}
	}
}

func (e *Env) testPodToWorld(ctx context.Context, t *T) {
	if e.P.ExternalTarget == "" {
		t.Skip("no external target: give one with --external-target URL (glia has no built-in internet address)")
	}
	for _, c := range e.clients() {
		n := e.node(c.Node)
		check := true
		if n.Status != nil && n.Status.Masquerading.Mode == "Disabled" {
			t.SkipScenario(c.Name+"-source-address", fmt.Sprintf("masquerading is disabled on %s", n.Name))
			check = false
		}
		t.Action("curl", c.String(), "world "+e.P.ExternalTarget, func(ctx context.Context, r *ActionResult) error {
			out, err := e.run(ctx, r, &c, "", curlCmd(e.P.ExternalTarget))
			if err != nil {
				return err
			}
			seen, perr := netip.ParseAddr(strings.TrimSpace(out))
			switch {
			case !check:
				return nil
			case e.WorldSourceIsNode && perr != nil:
				return fmt.Errorf("the target did not answer with the source address it saw: %q", snippet(out))
			case e.WorldSourceIsNode && seen.String() != n.IP:
				return fmt.Errorf("the world saw source %s, want the node address %s of %s (masqueraded)", seen, n.IP, n.Name)
			case perr == nil && seen.String() == c.IP:
				return fmt.Errorf("the world saw the pod's own address %s: not masqueraded on %s", seen, n.Name)
			}
			return nil
		})
	}
}

func (e *Env) testDNS(ctx context.Context, t *T) {
	if e.DNSMissing != "" {
		t.Skip(e.DNSMissing)
	}
	names := []struct{ name, want string }{
		{NameEchoSameNode, e.W.EchoSame.Name},
	}
	if e.W.EchoOther != nil {
		names = append(names, struct{ name, want string }{
			fmt.Sprintf("%s.%s.svc.%s", NameEchoOtherNode, e.P.Namespace, e.P.ClusterDomain), e.W.EchoOther.Name,
		})
	}
	for _, c := range e.clients() {
		for _, nm := range names {
			t.Action("curl", c.String(), fmt.Sprintf("%s:%d (by name)", nm.name, e.P.EchoPort), func(ctx context.Context, r *ActionResult) error {
				_, err := e.curlEcho(ctx, r, &c, "", fmt.Sprintf("http://%s:%d/", nm.name, e.P.EchoPort), nm.want)
				return err
			})
		}
	}
}

func (e *Env) testHealth(ctx context.Context, t *T) {
	for _, n := range e.Nodes {
		t.Action("health", "glia-agent on "+n.Name, fmt.Sprintf("all %d nodes", len(e.Nodes)), func(_ context.Context, r *ActionResult) error {
			r.Command, r.Where = "GET "+api.PathHealth, "glia-agent on "+n.Name
			// The test's own context: waiting for a fresh round may take
			// longer than one action's timeout.
			rep, problems, err := e.healthReport(ctx, n.Name)
			if err != nil {
				return fmt.Errorf("the agent's health report (GET %s): %w", api.PathHealth, err)
			}
			r.Output = fmt.Sprintf("probe time %s, %d nodes reported", rep.ProbeTime.Format("15:04:05"), len(rep.Nodes))
			if len(problems) > 0 {
				return errors.New(strings.Join(problems, "\n"))
			}
			return nil
		})
	}
}

// healthReport fetches a node's health report and names its problems. A
// failing report from a round that began before this run (the agent's
// first round, say, while the lab was still coming up) is not the
// verdict: it waits for the next round, at most two probe intervals.
func (e *Env) healthReport(ctx context.Context, node string) (*health.Report, []string, error) {
	var deadline time.Time
	for {
		rep, err := nodeHealth(ctx, e.Agents, node)
		if err != nil {
			return nil, nil, err
		}
		var problems []string
		if rep.ProbeTime.IsZero() {
			problems = append(problems, "the agent has not completed a health probe round yet")
		}
		reported := map[string]bool{}
		for _, ns := range rep.Nodes {
			reported[ns.Name] = true
			if !ns.Reachable() {
				problems = append(problems, fmt.Sprintf("%s unreachable: %s", ns.Name, strings.Join(ns.Problems(), "; ")))
			}
		}
		for _, other := range e.Nodes {
			if !reported[other.Name] {
				problems = append(problems, fmt.Sprintf("%s is missing from the report", other.Name))
			}
		}
		if len(problems) == 0 || e.Started.IsZero() || rep.ProbeTime.After(e.Started) {
			return rep, problems, nil
		}
		if deadline.IsZero() {
			iv := rep.Interval
			if iv <= 0 {
				iv = 30 * time.Second
			}
			deadline = time.Now().Add(min(2*iv+5*time.Second, 3*time.Minute))
		}
		if time.Now().After(deadline) {
			return rep, append(problems, fmt.Sprintf("(no newer probe round than %s came)", rep.ProbeTime.Format("15:04:05"))), nil
		}
		select {
		case <-ctx.Done():
			return rep, problems, nil
		case <-time.After(2 * time.Second):
		}
	}
}

// BaselineDrops reads every agent's glia_drops_total before the tests run.
func (e *Env) BaselineDrops(ctx context.Context) {
	e.drops, e.dropsErr = map[string]map[string]float64{}, map[string]error{}
	for _, n := range e.Nodes {
		m, err := e.readDrops(ctx, n)
		e.drops[n.Name], e.dropsErr[n.Name] = m, err
	}
}

func (e *Env) readDrops(ctx context.Context, n NodeInfo) (map[string]float64, error) {
	text, err := e.Agents.Metrics(ctx, n.Name, n.IP)
	if err != nil {
		return nil, err
	}
	return parseCounterByLabel(text, metrics.NameDropsTotal, "reason")
}

func isLegacy(n NodeInfo) bool {
	return n.Status != nil && strings.HasPrefix(strings.ToLower(n.Status.Datapath), "legacy")
}

func (e *Env) testDrops(ctx context.Context, t *T) {
	if e.drops == nil {
		t.Skip("no drop counters were read before the run (internal: BaselineDrops not called)")
	}
	expected := map[string]bool{}
	for _, r := range e.P.ExpectedDropReasons {
		expected[r] = true
	}
	for _, n := range e.Nodes {
		before, berr := e.drops[n.Name], e.dropsErr[n.Name]
		if errors.Is(berr, errNoMetric) && isLegacy(n) {
			t.SkipScenario(n.Name, fmt.Sprintf("%s has no sample on %s: its legacy datapath (kernel routing, iptables) counts no drops", metrics.NameDropsTotal, n.Name))
			continue
		}
		t.Action("metrics", "glia-agent on "+n.Name, metrics.NameDropsTotal, func(ctx context.Context, r *ActionResult) error {
			r.Command = fmt.Sprintf("GET http://%s/metrics", netipJoin(n.IP, metrics.DefaultPort))
			r.Where = "glia-agent on " + n.Name
			if berr != nil {
				return fmt.Errorf("before the run: %w", berr)
			}
			after, err := e.readDrops(ctx, n)
			if err != nil {
				return fmt.Errorf("after the run: %w", err)
			}
			var unexpected, rose []string
			reasons := make([]string, 0, len(after))
			for reason := range after {
				reasons = append(reasons, reason)
			}
			sort.Strings(reasons)
			for _, reason := range reasons {
				d := after[reason] - before[reason]
				if d <= 0 {
					continue // unchanged, or reset by a map recreation
				}
				s := fmt.Sprintf("%s{reason=%q} rose by %g", metrics.NameDropsTotal, reason, d)
				rose = append(rose, s)
				if !expected[reason] {
					unexpected = append(unexpected, s)
				}
			}
			r.Output = strings.Join(rose, "\n")
			if len(unexpected) > 0 {
				return fmt.Errorf("unexpected drops on %s during the run: %s", n.Name, strings.Join(unexpected, "; "))
			}
			return nil
		})
	}
}

func netipJoin(ip string, port int) string {
	if strings.Contains(ip, ":") {
		return "[" + ip + "]:" + strconv.Itoa(port)
	}
	return ip + ":" + strconv.Itoa(port)
}
