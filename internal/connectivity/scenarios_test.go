package connectivity

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/health"
)

// fakeNet is a model of a cluster's network that the fake executor answers
// from: pods, nodes, Services, and the paths that are broken.
type fakeNet struct {
	pods     map[string]Pod // by name
	nodes    []Node
	svcs     map[string]*Service // by ClusterIP
	rr       map[string]int
	dns      map[string]string // name -> ClusterIP
	worldIP  string
	masq     bool
	hostPort int
	// broken are node pairs "src->dst" whose pod traffic times out.
	broken map[string]bool
	// noNodePortOn are nodes that do not answer on NodePorts.
	noNodePortOn map[string]bool
	calls        []string
}

type fakeExec struct{ n *fakeNet }

func (f fakeExec) ExecPod(ctx context.Context, ns, pod string, cmd []string) (string, string, error) {
	p, ok := f.n.pods[pod]
	if !ok {
		return "", fmt.Sprintf("Error from server (NotFound): pods %q not found", pod), &ExitError{Code: 1}
	}
	f.n.calls = append(f.n.calls, pod+": "+strings.Join(cmd, " "))
	return f.n.handle(p.Node, p.IP, p.Name, cmd)
}

func (f fakeExec) ExecNode(ctx context.Context, node string, cmd []string) (string, string, error) {
	f.n.calls = append(f.n.calls, node+": "+strings.Join(cmd, " "))
	return f.n.handle(node, f.n.nodeIP(node), "", cmd)
}

func (n *fakeNet) nodeIP(name string) string {
	for _, nd := range n.nodes {
		if nd.Name == name {
			return nd.IP
		}
	}
	return ""
}

func (n *fakeNet) nodeOfIP(ip string) string {
	for _, nd := range n.nodes {
		if nd.IP == ip {
			return nd.Name
		}
	}
	return ""
}

func (n *fakeNet) podByIP(ip string) (Pod, bool) {
	for _, p := range n.pods {
		if p.IP == ip {
			return p, true
		}
	}
	return Pod{}, false
}

var timeout = &ExitError{Code: 28}

func (n *fakeNet) reach(srcNode, dstNode string) bool {
	return !n.broken[srcNode+"->"+dstNode]
}

func (n *fakeNet) handle(srcNode, srcIP, srcPod string, cmd []string) (string, string, error) {
	switch cmd[0] {
	case "ping":
		dst, ok := n.podByIP(cmd[len(cmd)-1])
		if !ok || !n.reach(srcNode, dst.Node) {
			return "1 packets transmitted, 0 received", "", &ExitError{Code: 1}
		}
		return "1 packets transmitted, 1 received", "", nil
	case "curl":
	default:
		return "", cmd[0] + ": not found", &ExitError{Code: 127}
	}
	u, err := url.Parse(cmd[len(cmd)-1])
	if err != nil {
		return "", err.Error(), &ExitError{Code: 3}
	}
	host, portS := u.Hostname(), u.Port()
	port, _ := strconv.Atoi(portS)
	if ip, ok := n.dns[host]; ok {
		host = ip
	} else if net.ParseIP(host) == nil {
		return "", "curl: (6) Could not resolve host: " + host, &ExitError{Code: 6}
	}
	timedOut := func() (string, string, error) {
		return "", "curl: (28) Connection timed out after 5001 milliseconds", timeout
	}
	if host == n.worldIP {
		if n.masq {
			return srcIPOfNode(n, srcNode) + "\n", "", nil
		}
		return srcIP + "\n", "", nil
	}
	backend := func(s *Service) (string, string, error) {
		b := s.Backends[n.rr[s.Name]%len(s.Backends)]
		n.rr[s.Name]++
		if !n.reach(srcNode, b.Node) {
			return timedOut()
		}
		return "hello from " + b.Name + "\n", "", nil
	}
	if s, ok := n.svcs[host]; ok && port == s.Port {
		return backend(s)
	}
	if node := n.nodeOfIP(host); node != "" {
		if port == n.hostPort {
			return "hello from " + node + "\n", "", nil
		}
		for _, s := range n.svcs {
			if s.NodePort == port {
				if n.noNodePortOn[node] {
					return "", "curl: (7) Failed to connect: Connection refused", &ExitError{Code: 7}
				}
				return backend(s)
			}
		}
		return "", "curl: (7) Failed to connect: Connection refused", &ExitError{Code: 7}
	}
	if p, ok := n.podByIP(host); ok {
		if !n.reach(srcNode, p.Node) {
			return timedOut()
		}
		return "hello from " + p.Name + "\n", "", nil
	}
	return timedOut()
}

func srcIPOfNode(n *fakeNet, node string) string { return n.nodeIP(node) }

// fakeAgents answers status, health and metrics per node.
type fakeAgents struct {
	status  map[string]*api.Status
	health  map[string]*health.Report
	noPath  map[string]bool // paths that answer 404
	drops   map[string]map[string]float64
	scrapes int
	// rise is added to drops at the second scrape of each node.
	rise map[string]map[string]float64
}

func (a *fakeAgents) Get(ctx context.Context, node, path string, out any) error {
	if a.noPath[path] {
		return fmt.Errorf("glia-agent on %s: GET %s: 404 Not Found: 404 page not found", node, path)
	}
	switch path {
	case api.PathStatus:
		*out.(*api.Status) = *a.status[node]
	case api.PathHealth:
		*out.(*health.Report) = *a.health[node]
	}
	return nil
}

func (a *fakeAgents) Metrics(ctx context.Context, node, nodeIP string) (string, error) {
	a.scrapes++
	var b strings.Builder
	b.WriteString("# TYPE glia_drops_total counter\n")
	for reason, v := range a.drops[node] {
		fmt.Fprintf(&b, "glia_drops_total{reason=%q} %g\n", reason, v)
	}
	for reason, d := range a.rise[node] {
		if a.drops[node] == nil {
			a.drops[node] = map[string]float64{}
		}
		a.drops[node][reason] += d
	}
	delete(a.rise, node)
	b.WriteString("glia_endpoints 3\n")
	return b.String(), nil
}

// fakeCluster builds an Env on a fake network of nodes nodes.
func fakeCluster(nodes int) (*Env, *fakeNet, *fakeAgents) {
	p := DefaultParams()
	n := &fakeNet{pods: map[string]Pod{}, svcs: map[string]*Service{}, rr: map[string]int{}, dns: map[string]string{},
		worldIP: "198.18.64.10", masq: true, hostPort: p.HostPort, broken: map[string]bool{}, noNodePortOn: map[string]bool{}}
	ag := &fakeAgents{status: map[string]*api.Status{}, health: map[string]*health.Report{}, noPath: map[string]bool{},
		drops: map[string]map[string]float64{}, rise: map[string]map[string]float64{}}
	var nl []Node
	for i := 1; i <= nodes; i++ {
		nd := Node{Name: fmt.Sprintf("lab-node-%d", i), IP: fmt.Sprintf("198.18.0.%d", 10+i), PodCIDR: fmt.Sprintf("198.19.%d.0/24", i)}
		nl = append(nl, nd)
		ag.status[nd.Name] = &api.Status{NodeName: nd.Name, Datapath: "ebpf (tcx)",
			KubeProxyReplacement: api.KubeProxyReplacementStatus{Enabled: true},
			HostRouting:          api.HostRoutingStatus{Mode: "BPF"}, Masquerading: api.MasqueradingStatus{Mode: "BPF", IPv4: true}}
		ag.drops[nd.Name] = map[string]float64{"no_backend": 0}
	}
	for _, nd := range nl {
		rep := &health.Report{ProbeTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
		for _, other := range nl {
			ok := health.ProbeResult{OK: true, RTT: time.Millisecond}
			rep.Nodes = append(rep.Nodes, health.NodeStatus{Name: other.Name, Local: other.Name == nd.Name,
				Host: health.PathStatus{ICMP: ok, HTTP: ok}})
		}
		ag.health[nd.Name] = rep
	}
	n.nodes = nl
	mk := func(name, node, ip string) Pod {
		pd := Pod{Namespace: p.Namespace, Name: name, Node: node, IP: ip}
		n.pods[name] = pd
		return pd
	}
	w := &Workloads{Hosts: map[string]Pod{}, Services: map[string]*Service{}}
	w.Client = mk("client-aaa", "lab-node-1", "198.19.1.10")
	w.Client2 = mk("client2-bbb", "lab-node-1", "198.19.1.11")
	w.EchoSame = mk("echo-same-node-ccc", "lab-node-1", "198.19.1.12")
	svc := func(name, ip string, nodePort int, backends ...Pod) {
		s := &Service{Name: name, ClusterIP: ip, Port: p.EchoPort, NodePort: nodePort, Backends: backends}
		w.Services[name] = s
		n.svcs[ip] = s
		n.dns[name] = ip
		n.dns[name+"."+p.Namespace+".svc."+p.ClusterDomain] = ip
	}
	svc(NameEchoSameNode, "198.18.128.20", 31001, w.EchoSame)
	if nodes > 1 {
		o := mk("echo-other-node-ddd", "lab-node-2", "198.19.2.10")
		w.EchoOther = &o
		svc(NameEchoOtherNode, "198.18.128.21", 31002, o)
		svc(NameEcho, "198.18.128.22", 0, w.EchoSame, o)
	} else {
		svc(NameEcho, "198.18.128.22", 0, w.EchoSame)
	}
	for _, nd := range nl {
		w.Hosts[nd.Name] = Pod{Namespace: p.Namespace, Name: "host-netns-" + nd.Name, Node: nd.Name, IP: nd.IP}
	}
	p.ExternalTarget = "http://198.18.64.10/"
	env := &Env{P: p, Exec: fakeExec{n}, Agents: ag, W: w, WorldSourceIsNode: true}
	env.DetectNodes(context.Background(), nl, nil)
	return env, n, ag
}

func runEnv(t *testing.T, env *Env, filter ...string) (*Report, map[string]TestResult) {
	t.Helper()
	f, err := ParseFilter(filter)
	if err != nil {
		t.Fatal(err)
	}
	env.BaselineDrops(context.Background())
	r := &Runner{Tests: env.Tests(), Filter: f}
	res := r.Run(context.Background())
	by := map[string]TestResult{}
	for _, tr := range res {
		by[tr.Name] = tr
	}
	return NewReport(env.P.Namespace, res), by
}

func failures(tr TestResult) []string {
	var out []string
	for _, a := range tr.Actions {
		if !a.Success {
			out = append(out, a.Name+": "+a.Source+" -> "+a.Destination+": "+a.Error)
		}
	}
	return out
}

func TestScenariosHealthyCluster(t *testing.T) {
	env, _, _ := fakeCluster(3)
	rep, by := runEnv(t, env)
	for name, tr := range by {
		if f := failures(tr); len(f) > 0 {
			t.Errorf("test %s failed:\n%s", name, strings.Join(f, "\n"))
		}
	}
	actions := map[string]int{}
	for name, tr := range by {
		actions[name] = len(tr.Actions)
	}
	want := map[string]int{
		TestHealth: 3, TestPodToPodSameNode: 2, TestPodToPodCrossNode: 2, TestClientToClient: 2,
		TestPodToService: 6, TestPodToSelf: 2, TestLocalNodePort: 4, TestRemoteNodePort: 8,
		TestPodToHost: 6, TestHostToPod: 6, TestPodToWorld: 2, TestDNS: 4, TestDrops: 3,
	}
	if d := cmp.Diff(want, actions); d != "" {
		t.Errorf("actions per test (-want +got):\n%s", d)
	}
	if got, want := rep.Line, "All 13 tests (50 actions) successful, 0 tests skipped, 0 scenarios skipped."; got != want {
		t.Errorf("summary line %q, want %q", got, want)
	}
}

func TestScenariosBrokenPaths(t *testing.T) {
	tests := []struct {
		name  string
		setup func(env *Env, n *fakeNet, a *fakeAgents)
		// failing maps each test that must fail to a text its first
		// failure must contain; every other test must pass or skip.
		filter  []string
		failing map[string]string
		skipped map[string]string
		line    string
	}{
		{
			name:   "route from node 1 to node 2's pod CIDR deleted",
			setup:  func(env *Env, n *fakeNet, a *fakeAgents) { n.broken["lab-node-1->lab-node-2"] = true },
			filter: []string{"^pod-to-pod"},
			failing: map[string]string{
				TestPodToPodCrossNode: "command terminated with exit code 28 (path: lab-node-1 -> lab-node-2, pod CIDR 198.19.2.0/24)",
			},
			line: "1/2 tests failed (2/4 actions), 0 tests skipped, 0 scenarios skipped:",
		},
		{
			name: "service map flushed on node 1 (nodeport and service fail from there)",
			setup: func(env *Env, n *fakeNet, a *fakeAgents) {
				n.noNodePortOn["lab-node-1"] = true
			},
			filter:  []string{"nodeport"},
			failing: map[string]string{TestLocalNodePort: "exit code 7"},
			line:    "1/2 tests failed (4/12 actions), 0 tests skipped, 0 scenarios skipped:",
		},
		{
			name:    "health endpoint not served",
			setup:   func(env *Env, n *fakeNet, a *fakeAgents) { a.noPath[api.PathHealth] = true },
			filter:  []string{"^health$"},
			failing: map[string]string{TestHealth: "the agent's health report (GET /v1/health): glia-agent on lab-node-1: GET /v1/health: 404 Not Found"},
			line:    "1/1 tests failed (3/3 actions), 0 tests skipped, 0 scenarios skipped:",
		},
		{
			name: "a node unreachable in a health report",
			setup: func(env *Env, n *fakeNet, a *fakeAgents) {
				r := a.health["lab-node-1"]
				r.Nodes[2].Host.HTTP = health.ProbeResult{Err: "connection refused"}
			},
			filter:  []string{"^health$"},
			failing: map[string]string{TestHealth: "lab-node-3 unreachable: host invalid IP: HTTP to agent: connection refused"},
			line:    "1/1 tests failed (1/3 actions), 0 tests skipped, 0 scenarios skipped:",
		},
		{
			name: "unexpected drops",
			setup: func(env *Env, n *fakeNet, a *fakeAgents) {
				a.rise["lab-node-2"] = map[string]float64{"no_backend": 4}
			},
			filter:  []string{"drops"},
			failing: map[string]string{TestDrops: `unexpected drops on lab-node-2 during the run: glia_drops_total{reason="no_backend"} rose by 4`},
			line:    "1/1 tests failed (1/3 actions), 0 tests skipped, 0 scenarios skipped:",
		},
		{
			name: "expected drops",
			setup: func(env *Env, n *fakeNet, a *fakeAgents) {
				a.rise["lab-node-2"] = map[string]float64{"no_backend": 4}
				env.P.ExpectedDropReasons = []string{"no_backend"}
			},
			filter: []string{"drops"},
			line:   "All 1 tests (3 actions) successful, 0 tests skipped, 0 scenarios skipped.",
		},
		{
			name: "legacy nodes without a drop metric, drop metric absent on a BPF node",
			setup: func(env *Env, n *fakeNet, a *fakeAgents) {
				for _, node := range []string{"lab-node-1", "lab-node-2"} {
					a.status[node].Datapath = "legacy"
					delete(a.drops, node)
				}
				delete(a.drops, "lab-node-3")
				env.DetectNodes(context.Background(), n.nodes, nil)
			},
			filter:  []string{"drops"},
			failing: map[string]string{TestDrops: "before the run: metric absent: glia_drops_total"},
			line:    "1/1 tests failed (1/1 actions), 0 tests skipped, 2 scenarios skipped:",
		},
		{
			name: "not masqueraded",
			setup: func(env *Env, n *fakeNet, a *fakeAgents) {
				n.masq = false
			},
			filter:  []string{"world"},
			failing: map[string]string{TestPodToWorld: "the world saw source 198.19.1.10, want the node address 198.18.0.11 of lab-node-1 (masqueraded)"},
			line:    "1/1 tests failed (2/2 actions), 0 tests skipped, 0 scenarios skipped:",
		},
		{
			name: "no DNS, no external target, no NodePort on a legacy node without kube-proxy",
			setup: func(env *Env, n *fakeNet, a *fakeAgents) {
				env.DNSMissing = "the cluster has no DNS: there is no Service kube-system/kube-dns"
				env.P.ExternalTarget = ""
				a.status["lab-node-3"].KubeProxyReplacement.Enabled = false
				env.KubeProxy = func(node string) bool { return false }
				env.DetectNodes(context.Background(), n.nodes, nil)
			},
			filter: []string{"dns|world|nodeport"},
			skipped: map[string]string{
				TestDNS:        "the cluster has no DNS: there is no Service kube-system/kube-dns",
				TestPodToWorld: "no external target: give one with --external-target URL (glia has no built-in internet address)",
			},
			line: "All 2 tests (8 actions) successful, 2 tests skipped, 2 scenarios skipped.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, n, a := fakeCluster(3)
			tt.setup(env, n, a)
			rep, by := runEnv(t, env, tt.filter...)
			for name, tr := range by {
				f := failures(tr)
				want, mustFail := tt.failing[name]
				switch {
				case mustFail && len(f) == 0:
					t.Errorf("test %s passed, want a failure containing %q", name, want)
				case mustFail && !strings.Contains(f[0], want):
					t.Errorf("test %s failed with\n%s\nwant it to contain %q", name, strings.Join(f, "\n"), want)
				case !mustFail && len(f) > 0:
					t.Errorf("test %s failed, want it to pass:\n%s", name, strings.Join(f, "\n"))
				}
				if reason, ok := tt.skipped[name]; ok != tr.Skipped || reason != tr.SkipReason {
					t.Errorf("test %s skipped=%t (%q), want skipped=%t (%q)", name, tr.Skipped, tr.SkipReason, ok, reason)
				}
			}
			if rep.Line != tt.line {
				t.Errorf("summary %q, want %q", rep.Line, tt.line)
			}
		})
	}
}

func TestScenariosSingleNode(t *testing.T) {
	env, _, _ := fakeCluster(1)
	rep, by := runEnv(t, env)
	for _, name := range []string{TestPodToPodCrossNode, TestRemoteNodePort} {
		if !by[name].Skipped {
			t.Errorf("test %s ran on a single-node cluster, want it skipped", name)
		}
	}
	if !rep.Summary.Success || rep.Summary.SkippedTests != 2 {
		t.Errorf("summary %q, want success with 2 tests skipped", rep.Line)
	}
}

func TestPodToServiceSeesEveryBackend(t *testing.T) {
	env, n, _ := fakeCluster(3)
	// A Service that never balances to its second backend.
	s := env.W.Services[NameEcho]
	n.svcs[s.ClusterIP] = &Service{Name: s.Name, ClusterIP: s.ClusterIP, Port: s.Port, Backends: s.Backends[:1]}
	_, by := runEnv(t, env, "^pod-to-service$")
	f := failures(by[TestPodToService])
	if len(f) != 2 {
		t.Fatalf("want the 2 all-backends actions to fail, got:\n%s", strings.Join(f, "\n"))
	}
	want := "30 requests never reached backend echo-other-node-ddd (answered by echo-same-node-ccc×30)"
	if !strings.Contains(f[0], want) {
		t.Errorf("failure %q lacks %q", f[0], want)
	}
}
