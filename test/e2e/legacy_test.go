package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"glia.dev/glia/internal/lab"
)

// TestLegacyLab is the skeleton issue's acceptance: a 3-node lab on the
// legacy datapath runs the story's DaemonSet and Service, every path works,
// and each node says why it runs legacy host routing.
func TestLegacyLab(t *testing.T) {
	l := upLab(t, 3)
	l.ApplyStory()
	for i := 1; i <= 3; i++ {
		node := fmt.Sprintf("lab-node-%d", i)
		out := l.Glia("status", "--node", node)
		for _, want := range []string{
			"Host Routing: Legacy\n  Reason: BPF host routing requires kube-proxy-replacement=true",
			"Masquerading: IPTables [IPv4: Enabled, IPv6: Disabled]",
			"KubeProxyReplacement: False",
			"Kubernetes: Ok",
			"Routing: Network: Native Host: Legacy",
			"IPAM: IPv4: ",
			"Controller Status: ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("glia status --node %s lacks %q:\n%s", node, want, out)
			}
		}
	}
	l.CheckConnectivity()
	t.Run("RootNamespaceHoldsOnlyTheLab", l.checkRootNamespace)
	t.Run("AgentKillNoFailedRequest", func(t *testing.T) { l.checkAgentKillLoop(t, 2*time.Minute) })
	t.Run("DownLeavesNothing", l.checkDownLeavesNothing)
}

// checkDownLeavesNothing takes the lab down and looks for anything it made:
// namespaces, links, routes, processes, pins, cgroups, mounts, files.
func (l *Lab) checkDownLeavesNothing(t *testing.T) {
	l.Glia("lab", "down")
	if left := labLeftovers(); len(left) > 0 {
		t.Errorf("glia lab down left behind:\n%s", strings.Join(left, "\n"))
	}
}

// hostPathsAbsentAtStart are the nodes' mount points (and their parents)
// the host did not have when the tests started: the lab makes them and must
// remove them.
var hostPathsAbsentAtStart = func() []string {
	var out []string
	for _, p := range lab.NodePaths {
		for ; p != "/"; p = filepath.Dir(p) {
			if _, err := os.Lstat(p); err != nil {
				out = append(out, p)
			}
		}
	}
	return out
}()

// labLeftovers lists what of a lab is on this machine: namespaces, links,
// routes, processes, pins, cgroups, mounts, files.
func labLeftovers() []string {
	var left []string
	if out, _ := exec.Command("ip", "netns", "list").CombinedOutput(); strings.Contains(string(out), "glia-") {
		left = append(left, "namespaces: "+string(out))
	}
	if out, _ := exec.Command("ip", "-o", "link").CombinedOutput(); strings.Contains(string(out), "glab-") || strings.Contains(string(out), "glia-lab0") {
		left = append(left, "links: "+string(out))
	}
	out, _ := exec.Command("ip", "-4", "route", "show", "type", "blackhole").CombinedOutput()
	for _, p := range []string{"198.18.0.0/15"} {
		if strings.Contains(string(out), p) {
			left = append(left, "blackhole route "+p)
		}
	}
	for _, p := range []string{"/run/glia-lab", "/sys/fs/bpf/glia-lab", "/sys/fs/cgroup/unified/glia-lab"} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, "path "+p)
		}
	}
	// The nodes' mount points the lab made on the host go with it.
	for _, p := range hostPathsAbsentAtStart {
		if _, err := os.Lstat(p); err == nil {
			left = append(left, "host mount point "+p)
		}
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), "glia-") {
		left = append(left, "mounts:\n"+string(b))
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), "/run/glia-lab/") {
			left = append(left, "process "+p+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return left
}

// checkRootNamespace: the root namespace routes none of the lab's ranges
// outward and does not forward what arrives from the lab.
func (l *Lab) checkRootNamespace(t *testing.T) {
	out, err := exec.Command("ip", "-4", "route", "show", "type", "blackhole").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route: %v: %s", err, out)
	}
	for _, want := range []string{"198.18.0.0/15"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("root namespace lacks blackhole route for %s:\n%s", want, out)
		}
	}
	b, err := os.ReadFile("/proc/sys/net/ipv4/conf/glia-lab0/forwarding")
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		t.Errorf("forwarding on glia-lab0 = %q (%v), want 0", b, err)
	}
}

// checkAgentKillLoop runs a curl loop across pods on other nodes and the
// Service for d while one node's agent is SIGKILLed and restarted, and
// fails on any failed request.
func (l *Lab) checkAgentKillLoop(t *testing.T, d time.Duration) {
	web := l.Pods("app=simple-webserver")
	var targets []string
	for _, p := range web {
		targets = append(targets, "http://"+p.Status.PodIP+":8081")
	}
	targets = append(targets, "http://simple-webserver-service:8081")
	// One curl per target every 250 ms, bounded by d; a failure prints FAIL.
	script := fmt.Sprintf(`end=$(( $(date +%%s) + %d )); n=0; f=0
while [ $(date +%%s) -lt $end ]; do
  for u in %s; do n=$((n+1)); curl -sf --max-time 2 -o /dev/null "$u" || { f=$((f+1)); echo "FAIL $(date +%%T.%%N) $u"; }; done
  sleep 0.25
done
echo "requests=$n failed=$f"`, int(d.Seconds()), strings.Join(targets, " "))
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := run(ctx, l.glia(), "lab", "exec", "curler", "--", "sh", "-c", script)
		done <- result{out, err}
	}()
	// Kill and restart the agent of a node other than the client's, then of the client's own.
	time.Sleep(d / 6)
	for _, node := range []string{"lab-node-2", "lab-node-1", "lab-node-3"} {
		l.Glia("lab", "agent", "kill", node)
		time.Sleep(2 * time.Second)
		l.Glia("lab", "agent", "start", node)
		time.Sleep(d / 6)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("curl loop: %v\n%s", r.err, r.out)
	}
	last := r.out[strings.LastIndex(strings.TrimSpace(r.out), "\n")+1:]
	t.Logf("curl loop across 3 agent kills: %s", strings.TrimSpace(last))
	if !strings.Contains(r.out, "failed=0") || strings.Contains(r.out, "FAIL") {
		t.Errorf("requests failed while agents were killed and restarted:\n%s", r.out)
	}
}
