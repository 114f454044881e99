// Package e2e runs glia's lab end to end: it brings up real clusters on this
// machine (the real Kubernetes control plane, node namespaces, glia-agents)
// and checks every path the users' story relies on. It needs root and the
// binaries of `make build`; `make test` runs it with GLIA_E2E=1.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"glia.dev/glia/internal/lab"
)

// binDir is where `make build` put the binaries.
func binDir(t *testing.T) string {
	t.Helper()
	if os.Getenv("GLIA_E2E") != "1" {
		t.Skip("lab end-to-end tests run with GLIA_E2E=1 (make test sets it)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("lab end-to-end tests need root (network namespaces, BPF, iptables)")
	}
	dir := os.Getenv("GLIA_BIN")
	if dir == "" {
		abs, _ := filepath.Abs("../../bin")
		dir = abs
	}
	for _, b := range lab.RequiredBinaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("%s missing: run `make build` first", filepath.Join(dir, b))
		}
	}
	return dir
}

// Lab is a lab brought up for one test.
type Lab struct {
	t         *testing.T
	bin       string
	NodeCount int
	kc        string
	cs        kubernetes.Interface
}

// run runs a command and returns its combined output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// upLab brings up a lab with `glia lab up ARGS` and takes it down at the
// end of the test (GLIA_E2E_KEEP=1 keeps it for a look).
func upLab(t *testing.T, nodes int, args ...string) *Lab {
	t.Helper()
	bin := binDir(t)
	l := &Lab{t: t, bin: bin, NodeCount: nodes}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := run(ctx, l.glia(), append([]string{"lab", "up", "--nodes", fmt.Sprint(nodes)}, args...)...)
	t.Cleanup(func() {
		if t.Failed() {
			l.dumpLogs()
		}
		if os.Getenv("GLIA_E2E_KEEP") == "1" {
			t.Logf("GLIA_E2E_KEEP=1: lab left up")
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := run(ctx, l.glia(), "lab", "down"); err != nil {
			t.Errorf("lab down: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf("glia lab up: %v\n%s", err, out)
	}
	l.kc = "/run/glia-lab/kubeconfig"
	cfg, err := clientcmd.BuildConfigFromFlags("", l.kc)
	if err != nil {
		t.Fatal(err)
	}
	l.cs = kubernetes.NewForConfigOrDie(cfg)
	return l
}

func (l *Lab) glia() string { return filepath.Join(l.bin, "glia") }

func (l *Lab) dumpLogs() {
	// The agents' container logs, the runners' and the control plane's.
	logs, _ := filepath.Glob("/run/glia-lab/nodes/*/runner/logs/glia-system_*glia-agent*.log")
	runners, _ := filepath.Glob("/run/glia-lab/logs/*-runner.log")
	for _, f := range append(logs, runners...) {
		b, _ := os.ReadFile(f)
		l.t.Logf("--- last lines of %s:\n%s", f, tail(string(b), 40))
	}
}

// agentPod returns the glia DaemonSet's pod on node.
func (l *Lab) agentPod(t *testing.T, node string) *corev1.Pod {
	t.Helper()
	p, err := lab.AgentPod(context.Background(), l.cs, node)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitAgentPod waits until node's agent pod — a new one, not oldUID — is
// Ready.
func (l *Lab) waitAgentPod(t *testing.T, node, oldUID string) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	eventually(t, 3*time.Minute, "a new Ready glia agent pod on "+node, func() error {
		var err error
		if p, err = lab.AgentPod(context.Background(), l.cs, node); err != nil {
			return err
		}
		if string(p.UID) == oldUID {
			return fmt.Errorf("still the old pod %s", p.Name)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("pod %s is not Ready", p.Name)
	})
	return p
}

// Glia runs the glia CLI and fails the test on error.
func (l *Lab) Glia(args ...string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := run(ctx, l.glia(), args...)
	if err != nil {
		l.t.Fatalf("glia %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Kubectl runs kubectl against the lab.
func (l *Lab) Kubectl(args ...string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := run(ctx, "kubectl", append([]string{"--kubeconfig", l.kc}, args...)...)
	if err != nil {
		l.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Exec runs a command in a pod and returns its output and error.
func (l *Lab) Exec(pod string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return run(ctx, l.glia(), append([]string{"lab", "exec", pod, "--"}, cmd...)...)
}

// ExecNode runs a command in a node's network namespace.
func (l *Lab) ExecNode(node string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return run(ctx, l.glia(), append([]string{"lab", "exec", "--node", node, "--"}, cmd...)...)
}

// Curl fetches url from a pod ("" = from node's namespace given by node).
func (l *Lab) Curl(pod, url string) (string, error) {
	out, err := l.Exec(pod, "curl", "-sS", "--max-time", "5", url)
	return strings.TrimSpace(out), err
}

func (l *Lab) Pods(selector string) []corev1.Pod {
	l.t.Helper()
	pl, err := l.cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		l.t.Fatal(err)
	}
	return pl.Items
}

func (l *Lab) Nodes() []corev1.Node {
	l.t.Helper()
	nl, err := l.cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	return nl.Items
}

// ApplyStory applies the story's manifests plus a host-network echo
// DaemonSet (for pod→node checks) and waits for all of it.
func (l *Lab) ApplyStory() {
	l.t.Helper()
	l.Kubectl("apply", "-f", "../../examples/story/webserver.yaml", "-f", "../../examples/story/curler.yaml", "-f", "testdata/host-echo.yaml")
	l.Kubectl("rollout", "status", "daemonset/simple-webserver-daemonset", "--timeout=120s")
	l.Kubectl("rollout", "status", "daemonset/host-echo", "--timeout=120s")
	l.Kubectl("wait", "--for=condition=Ready", "pod/curler", "--timeout=120s")
}

func nodeIP(n corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// eventually retries f until it succeeds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// CheckConnectivity runs every check of the skeleton issue: pod↔pod on a
// node and across nodes, the Service by name from every backend, the
// outside world with masquerade, node→pod and pod→node.
func (l *Lab) CheckConnectivity() {
	t := l.t
	t.Helper()
	nodes := l.Nodes()
	if len(nodes) != l.NodeCount {
		t.Fatalf("%d nodes registered, want %d", len(nodes), l.NodeCount)
	}
	cidrOf := map[string]netip.Prefix{}
	ipOf := map[string]string{}
	for _, n := range nodes {
		ready := false
		for _, c := range n.Status.Conditions {
			ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
		}
		if !ready {
			t.Errorf("node %s is not Ready", n.Name)
		}
		cidrOf[n.Name] = netip.MustParsePrefix(n.Spec.PodCIDR)
		ipOf[n.Name] = nodeIP(n)
	}
	web := l.Pods("app=simple-webserver")
	if len(web) != l.NodeCount {
		t.Fatalf("%d web server pods, want one per node (%d)", len(web), l.NodeCount)
	}
	perNode := map[string]int{}
	for _, p := range web {
		perNode[p.Spec.NodeName]++
		ip := netip.MustParseAddr(p.Status.PodIP)
		if !cidrOf[p.Spec.NodeName].Contains(ip) {
			t.Errorf("pod %s has IP %s outside its node %s's pod CIDR %s", p.Name, ip, p.Spec.NodeName, cidrOf[p.Spec.NodeName])
		}
	}
	for n := range cidrOf {
		if perNode[n] != 1 {
			t.Errorf("node %s runs %d web server pods, want 1", n, perNode[n])
		}
	}
	clients := []string{"curler"}
	for _, p := range web {
		clients = append(clients, p.Name)
	}
	// Pod to pod, on the node and across nodes, from every client to every server.
	for _, c := range clients {
		for _, p := range web {
			want := "hello from " + p.Name
			eventually(t, 20*time.Second, fmt.Sprintf("%s → %s (%s)", c, p.Name, p.Status.PodIP), func() error {
				got, err := l.Curl(c, "http://"+p.Status.PodIP+":8081")
				if err != nil || got != want {
					return fmt.Errorf("got %q (%v), want %q", got, err, want)
				}
				return nil
			})
		}
	}
	// The Service, called by name, answers from every backend.
	seen := map[string]bool{}
	eventually(t, 60*time.Second, "curler → simple-webserver-service:8081 reaches every backend", func() error {
		got, err := l.Curl("curler", "http://simple-webserver-service:8081")
		if err != nil {
			return fmt.Errorf("%v: %s", err, got)
		}
		seen[strings.TrimPrefix(got, "hello from ")] = true
		for _, p := range web {
			if !seen[p.Name] {
				return fmt.Errorf("not yet answered by %s (seen %v)", p.Name, seen)
			}
		}
		return nil
	})
	// The outside world answers and sees the node's address, not the pod's.
	for _, c := range clients {
		pod, err := l.cs.CoreV1().Pods("default").Get(context.Background(), c, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := ipOf[pod.Spec.NodeName]
		eventually(t, 20*time.Second, c+" → outside 198.18.64.10", func() error {
			got, err := l.Curl(c, "http://198.18.64.10/")
			if err != nil || got != want {
				return fmt.Errorf("outside server saw %q (%v), want the node address %s", got, err, want)
			}
			return nil
		})
	}
	// Node to Service: processes in a node's namespace reach the ClusterIP
	// (kube-proxy's rules on legacy nodes, socket load balancing on eBPF ones).
	svc, err := l.cs.CoreV1().Services("default").Get(context.Background(), "simple-webserver-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		eventually(t, 20*time.Second, fmt.Sprintf("node %s → Service %s:8081", n.Name, svc.Spec.ClusterIP), func() error {
			out, err := l.ExecNode(n.Name, "curl", "-sS", "--max-time", "5", "http://"+svc.Spec.ClusterIP+":8081")
			if got := strings.TrimSpace(out); err != nil || !strings.HasPrefix(got, "hello from simple-webserver-daemonset-") {
				return fmt.Errorf("got %q (%v)", got, err)
			}
			return nil
		})
	}
	// Node to pod and pod to node (the host-network echo on 8082).
	for _, n := range nodes {
		for _, p := range web {
			want := "hello from " + p.Name
			eventually(t, 20*time.Second, fmt.Sprintf("node %s → pod %s", n.Name, p.Name), func() error {
				out, err := l.ExecNode(n.Name, "curl", "-sS", "--max-time", "5", "http://"+p.Status.PodIP+":8081")
				if got := strings.TrimSpace(out); err != nil || got != want {
					return fmt.Errorf("got %q (%v), want %q", got, err, want)
				}
				return nil
			})
		}
		eventually(t, 20*time.Second, fmt.Sprintf("curler → node %s (%s:8082)", n.Name, ipOf[n.Name]), func() error {
			got, err := l.Curl("curler", "http://"+ipOf[n.Name]+":8082/")
			if err != nil || !strings.HasPrefix(got, "hello from ") {
				return fmt.Errorf("got %q (%v)", got, err)
			}
			return nil
		})
	}
}

// agentLog returns the log of node's agent container, as `kubectl logs`
// gives it (the previous run's when the current one has not logged).
func (l *Lab) agentLog(t *testing.T, node string) string {
	t.Helper()
	p := l.agentPod(t, node)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, prev := range []string{"--previous=false", "--previous=true"} {
		out, err := run(ctx, "kubectl", "--kubeconfig", l.kc, "-n", p.Namespace, "logs", p.Name, "-c", lab.AgentContainer, prev)
		if err == nil && strings.TrimSpace(out) != "" {
			return out
		}
	}
	t.Fatalf("no log of the agent container of %s", p.Name)
	return ""
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func writeTemp(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
