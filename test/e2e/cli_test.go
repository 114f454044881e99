package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// gliaCode runs glia and returns its combined output and exit code.
func (l *Lab) gliaCode(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := run(ctx, l.glia(), args...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out, 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return out, ee.ExitCode()
	}
	t.Fatalf("glia %s: %v\n%s", strings.Join(args, " "), err, out)
	return "", -1
}

// TestCLI drives the operator's CLI against a live two-node lab: every
// agent's version through the API server, the cluster-wide status, the
// Cilium-shaped lines, output formats, exit codes, and a ConfigMap carrying
// Cilium keys glia does not implement.
func TestCLI(t *testing.T) {
	l := upLab(t, 2)
	nodes := []string{"lab-node-1", "lab-node-2"}

	// glia version --cluster: every node's agent, the same build as the
	// client (the lab runs the glia of bin/).
	var ver struct {
		Kind   string `json:"kind"`
		Client struct {
			Version, Commit string
		} `json:"client"`
		Agents []struct {
			Node, Version, Commit, Datapath, Error string
		} `json:"agents"`
	}
	if err := json.Unmarshal([]byte(l.Glia("version", "--cluster", "-o", "json")), &ver); err != nil {
		t.Fatal(err)
	}
	if ver.Kind != "Version" || len(ver.Agents) != len(nodes) {
		t.Fatalf("version --cluster: kind %q, %d agents, want Version and %d: %+v", ver.Kind, len(ver.Agents), len(nodes), ver)
	}
	for i, a := range ver.Agents {
		if a.Node != nodes[i] || a.Error != "" || a.Version != ver.Client.Version || a.Commit != ver.Client.Commit || a.Datapath != "legacy" && a.Datapath != "bpf" {
			t.Errorf("agent %d: %+v; want node %s, version %s, commit %s, a datapath", i, a, nodes[i], ver.Client.Version, ver.Client.Commit)
		}
	}
	text := l.Glia("version", "--cluster")
	for _, n := range nodes {
		if !regexp.MustCompile(`(?m)^` + n + ` +` + regexp.QuoteMeta(ver.Client.Version) + ` `).MatchString(text) {
			t.Errorf("version --cluster has no row for %s at %s:\n%s", n, ver.Client.Version, text)
		}
	}

	// glia status --all-nodes, and glia status alone (no --node: the lab's
	// kubeconfig is found): one row per node.
	for _, args := range [][]string{{"status", "--all-nodes"}, {"status"}} {
		out := l.Glia(args...)
		if !strings.Contains(out, "Agents: 2/2 answered") {
			t.Errorf("glia %s:\n%s", strings.Join(args, " "), out)
		}
		for _, n := range nodes {
			if !regexp.MustCompile(`(?m)^` + n + ` +(legacy|bpf) +(Legacy|BPF) +`).MatchString(out) {
				t.Errorf("glia %s: no row for %s:\n%s", strings.Join(args, " "), n, out)
			}
		}
	}
	hr := l.Glia("status", "--all-nodes", "-o", `jsonpath={range .items[*]}{.node}={.status.hostRouting.mode}{"\n"}{end}`)
	if !regexp.MustCompile(`^lab-node-1=(Legacy|BPF)\nlab-node-2=(Legacy|BPF)\n$`).MatchString(hr) {
		t.Errorf("status --all-nodes -o jsonpath:\n%q", hr)
	}

	// The lines a Cilium user greps, from a live agent.
	eventually(t, 30*time.Second, "health ICMP and HTTP lines with RTTs", func() error {
		out := l.Glia("health", "status", "--node", "lab-node-1", "-v")
		if n := strings.Count(out, "ICMP to stack: OK, RTT="); n != 4 {
			return fmt.Errorf("%d ICMP lines, want 4 (2 nodes × host and endpoint):\n%s", n, out)
		}
		if n := strings.Count(out, "HTTP to agent: OK, RTT="); n != 4 {
			return fmt.Errorf("%d HTTP lines, want 4:\n%s", n, out)
		}
		return nil
	})
	eventually(t, 15*time.Second, "status lines as cilium status prints them", func() error {
		st := l.Glia("status", "--node", "lab-node-1")
		for _, re := range []string{`(?m)^KubeProxyReplacement: (True|False) `, `(?m)^Host Routing: (Legacy|BPF)$`,
			`(?m)^Masquerading: (IPTables|BPF) `, `(?m)^Cluster health: 2/2 reachable( |$)`} {
			if !regexp.MustCompile(re).MatchString(st) {
				return fmt.Errorf("status lacks %s:\n%s", re, st)
			}
		}
		return nil
	})
	var eps map[string]any
	if err := json.Unmarshal([]byte(l.Glia("endpoint", "list", "--node", "lab-node-1", "-o", "json")), &eps); err != nil {
		t.Fatal(err)
	}
	if eps["kind"] != "EndpointList" || eps["items"] == nil {
		t.Errorf("endpoint list -o json: kind %v, items %v", eps["kind"], eps["items"])
	}

	// Exit codes against a live cluster.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status", "--node", "lab-node-1", "-o", "xml"}, 2, `unknown output format "xml"`},
		{[]string{"status", "--all-nodes", "--node", "lab-node-1"}, 2, "drop --node"},
		{[]string{"status", "--node", "lab-node-1", "-o", "json"}, 0, `"kind": "Status"`},
		{[]string{"version", "--cluster", "-n", "no-such-namespace"}, 1, "no-such-namespace"},
	} {
		out, code := l.gliaCode(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("glia %s: exit %d (want %d), output lacks %q:\n%s", strings.Join(tc.args, " "), code, tc.code, tc.want, out)
		}
	}

	// Cilium keys glia does not implement: a warning, not a refusal.
	l.Kubectl("-n", "glia-system", "patch", "configmap", "glia-config", "--type", "merge",
		"-p", `{"data":{"enable-hubble":"true","cluster-name":"lab","enable-ipv6":"false"}}`)
	l.Glia("lab", "agent", "restart", "lab-node-2")
	const warning = "sets Cilium keys glia does not implement, ignored: cluster-name, enable-hubble, enable-ipv6"
	if out := l.Glia("status", "--node", "lab-node-2"); !strings.Contains(out, warning) {
		t.Errorf("status of lab-node-2 lacks the warning %q:\n%s", warning, out)
	}
	if out := l.Glia("status", "--all-nodes"); !strings.Contains(out, "Warning (lab-node-2): ") || !strings.Contains(out, warning) {
		t.Errorf("status --all-nodes lacks the warning for lab-node-2:\n%s", out)
	}
	p := l.agentPod(t, "lab-node-2")
	if logs := l.Kubectl("-n", "glia-system", "logs", p.Name, "-c", "glia-agent"); !strings.Contains(logs, warning) {
		t.Errorf("agent log of lab-node-2 lacks %q:\n%s", warning, tail(logs, 30))
	}
}
