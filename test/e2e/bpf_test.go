package e2e

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"glia.dev/glia/internal/lab"
)

var bpfSet = []string{"--set", "kube-proxy-replacement=true", "--set", "enable-bpf-masquerade=true"}

// checkBPFNode: the node runs BPF host routing and masquerade, and holds no
// kube-proxy rule and no MASQUERADE rule.
func (l *Lab) checkBPFNode(t *testing.T, node string) {
	t.Helper()
	out := l.Glia("status", "--node", node)
	for _, want := range []string{
		"Host Routing: BPF\n",
		"Masquerading: BPF [eth0] 198.19.0.0/16 [IPv4: Enabled, IPv6: Disabled]",
		"KubeProxyReplacement: True",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("glia status --node %s lacks %q:\n%s", node, want, out)
		}
	}
	rules, err := l.ExecNode(node, "iptables-save")
	if err != nil {
		t.Fatalf("iptables-save on %s: %v\n%s", node, err, rules)
	}
	for _, line := range strings.Split(rules, "\n") {
		if strings.Contains(line, "KUBE-") || strings.Contains(line, "MASQUERADE") {
			t.Errorf("%s runs the eBPF datapath but holds iptables rule %q", node, line)
		}
	}
	nft, err := l.ExecNode(node, "nft", "list", "ruleset")
	if err == nil && (strings.Contains(nft, "kube-proxy") || strings.Contains(nft, "masquerade")) {
		t.Errorf("%s runs the eBPF datapath but its nftables ruleset has kube-proxy or masquerade rules:\n%s", node, nft)
	}
}

func (l *Lab) checkLegacyNode(t *testing.T, node string) {
	t.Helper()
	out := l.Glia("status", "--node", node)
	for _, want := range []string{"Host Routing: Legacy\n  Reason: ", "Masquerading: IPTables"} {
		if !strings.Contains(out, want) {
			t.Errorf("glia status --node %s lacks %q:\n%s", node, want, out)
		}
	}
}

// TestBPFLab: every node on the eBPF datapath (native routing) passes the
// skeleton's checks, spreads a Service's connections evenly, and stops
// sending new connections to a deleted backend.
func TestBPFLab(t *testing.T) {
	l := upLab(t, 3, bpfSet...)
	l.ApplyStory()
	for i := 1; i <= 3; i++ {
		l.checkBPFNode(t, fmt.Sprintf("lab-node-%d", i))
	}
	l.CheckConnectivity()
	t.Run("EvenSpread", l.checkSpread)
	t.Run("DeletedBackendGetsNoNewConnections", l.checkDeletedBackend)
	t.Run("ConnectivityTest", l.connectivityPasses)
	t.Run("FlushedServiceMapFailsPodToService", l.checkFlushedServiceMap)
	t.Run("ConnDisruptAcrossAgentKill", func(t *testing.T) {
		line, ok := l.connDisrupt(t, func() {
			l.Glia("lab", "agent", "kill", "lab-node-2")
			time.Sleep(3 * time.Second)
			l.Glia("lab", "agent", "start", "lab-node-2")
		})
		t.Logf("across a SIGKILL and restart of lab-node-2's agent (eBPF): %s", line)
		if !ok || !strings.Contains(line, " 0 resets, 0 stalls > 1s; ") || !strings.Contains(line, " 0 failed") {
			t.Errorf("connections were interrupted: %s", line)
		}
	})
}

// TestTunnelLab: the same checks with VXLAN between nodes.
func TestTunnelLab(t *testing.T) {
	l := upLab(t, 3, append(bpfSet, "--set", "routing-mode=tunnel")...)
	l.ApplyStory()
	for i := 1; i <= 3; i++ {
		node := fmt.Sprintf("lab-node-%d", i)
		l.checkBPFNode(t, node)
		if out := l.Glia("status", "--node", node); !strings.Contains(out, "Tunnel") {
			t.Errorf("glia status --node %s does not report tunnel routing:\n%s", node, out)
		}
	}
	l.CheckConnectivity()
}

// TestMixedLab: two legacy nodes and two eBPF nodes (chosen by a
// GliaNodeConfig on a label) interoperate in both directions, for pods,
// the Service and the outside world.
func TestMixedLab(t *testing.T) {
	l := upLab(t, 4, "--apply", "../../examples/switch/glia-fix-full.yaml",
		"--node-label", "lab-node-3:io.glia.enable-ebpf=true", "--node-label", "lab-node-4:io.glia.enable-ebpf=true")
	l.ApplyStory()
	l.checkLegacyNode(t, "lab-node-1")
	l.checkLegacyNode(t, "lab-node-2")
	l.checkBPFNode(t, "lab-node-3")
	l.checkBPFNode(t, "lab-node-4")
	l.CheckConnectivity()
	t.Run("ConnectivityTest", l.connectivityPasses)
}

// serviceHits makes n new connections from curler to the Service and
// counts the answers per backend.
func (l *Lab) serviceHits(t *testing.T, n int) map[string]int {
	t.Helper()
	script := fmt.Sprintf(`for i in $(seq %d); do curl -s --max-time 2 http://simple-webserver-service:8081 || echo FAILED; done`, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := run(ctx, l.glia(), "lab", "exec", "curler", "--", "sh", "-c", script)
	if err != nil {
		t.Fatalf("curl loop: %v\n%s", err, out)
	}
	hits := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		hits[strings.TrimPrefix(line, "hello from ")]++
	}
	return hits
}

func (l *Lab) checkSpread(t *testing.T) {
	const n = 1000
	hits := l.serviceHits(t, n)
	web := l.Pods("app=simple-webserver")
	want := float64(n) / float64(len(web))
	t.Logf("1000 new connections to simple-webserver-service: %v", hits)
	if hits["FAILED"] > 0 {
		t.Errorf("%d of %d connections failed", hits["FAILED"], n)
	}
	for _, p := range web {
		// Each backend's count is binomial(n, 1/k): allow 5 standard
		// deviations (±75 of 333 for 3 backends), which a fair random pick
		// exceeds about once in a million runs, while a skew a user would
		// notice (one backend at half, one never picked) is far outside.
		// (±10% was 2.2 deviations: a fair pick failed it ~7% of runs.)
		p1 := 1 / float64(len(web))
		tol := 5 * math.Sqrt(float64(n)*p1*(1-p1))
		got := float64(hits[p.Name])
		if math.Abs(got-want) > tol {
			t.Errorf("backend %s got %d of %d connections, want %.0f ± %.0f (5 standard deviations)", p.Name, hits[p.Name], n, want, tol)
		}
	}
}

func (l *Lab) checkDeletedBackend(t *testing.T) {
	web := l.Pods("app=simple-webserver")
	victim := web[0]
	ctx := context.Background()
	if err := l.cs.CoreV1().Pods("default").Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Wait until the EndpointSlice no longer offers the victim as ready.
	eventually(t, 30*time.Second, "EndpointSlice drops "+victim.Name, func() error {
		sl, err := l.cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=simple-webserver-service"})
		if err != nil {
			return err
		}
		for _, s := range sl.Items {
			for _, e := range s.Endpoints {
				if e.TargetRef != nil && e.TargetRef.Name == victim.Name && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
					return fmt.Errorf("%s still ready in %s", victim.Name, s.Name)
				}
			}
		}
		return nil
	})
	hits := l.serviceHits(t, 200)
	t.Logf("200 new connections after deleting %s: %v", victim.Name, hits)
	if hits[victim.Name] > 0 {
		t.Errorf("deleted backend %s still received %d new connections", victim.Name, hits[victim.Name])
	}
	if hits["FAILED"] > 0 {
		t.Errorf("%d connections failed after a backend was deleted", hits["FAILED"])
	}
}

// checkFlushedServiceMap stops the connectivity client's node agent and
// empties that node's service map: pod-to-service must fail, naming the
// client; restarting the agent repairs it.
func (l *Lab) checkFlushedServiceMap(t *testing.T) {
	ctx := context.Background()
	if out, err := l.connectivity(t, 3*time.Minute, "--keep-workloads", "--test", "^pod-to-service$"); err != nil {
		t.Fatalf("pod-to-service before the break: %v\n%s", err, out)
	}
	pl, err := l.cs.CoreV1().Pods("glia-test").List(ctx, metav1.ListOptions{LabelSelector: "name=client"})
	if err != nil || len(pl.Items) != 1 {
		t.Fatalf("connectivity client pod: %v (%d)", err, len(pl.Items))
	}
	node := pl.Items[0].Spec.NodeName
	l.Glia("lab", "agent", "stop", node)
	started := false
	defer func() {
		if !started {
			l.Glia("lab", "agent", "start", node)
		}
	}()
	layout, err := lab.DefaultLayout(l.bin)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(layout.AgentBPFDir(node), "glia_services"), nil)
	if err != nil {
		t.Fatalf("open %s's service map: %v", node, err)
	}
	defer m.Close()
	var keys [][]byte
	k, v := make([]byte, m.KeySize()), make([]byte, m.ValueSize())
	for it := m.Iterate(); it.Next(&k, &v); {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, key := range keys {
		if err := m.Delete(key); err != nil {
			t.Fatalf("flush %s's service map: %v", node, err)
		}
	}
	out, err := l.connectivity(t, 3*time.Minute, "--keep-workloads", "--test", "^pod-to-service$")
	if err == nil {
		t.Fatalf("pod-to-service passed with %s's service map flushed:\n%s", node, out)
	}
	if !strings.Contains(out, "Test [pod-to-service]:") || !strings.Contains(out, node) {
		t.Errorf("the failure does not name pod-to-service and the client's node %s:\n%s", node, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "tests failed") {
			t.Logf("with %s's service map flushed: %s", node, strings.TrimSpace(line))
		}
	}
	started = true
	l.Glia("lab", "agent", "start", node)
	eventually(t, 60*time.Second, "pod-to-service repaired by the restarted agent", func() error {
		out, err := l.connectivity(t, 2*time.Minute, "--test", "^pod-to-service$")
		if err != nil || !summaryLine.MatchString(out) {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	})
}
