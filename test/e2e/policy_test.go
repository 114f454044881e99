package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// denyIngress isolates the story's web servers for ingress: nothing may
// reach them (but their own node).
const denyIngress = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-deny-all
spec:
  podSelector:
    matchLabels:
      app: simple-webserver
  policyTypes: [Ingress]
`

// allowClient lets pods labelled role=client reach the web servers on
// TCP 8081.
const allowClient = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-allow-client
spec:
  podSelector:
    matchLabels:
      app: simple-webserver
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels:
          role: client
    ports:
    - protocol: TCP
      port: 8081
`

// denyEgress isolates the client for egress (DNS included).
const denyEgress = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: client-deny-egress
spec:
  podSelector:
    matchLabels:
      role: client
  policyTypes: [Egress]
`

// TestPolicyMixedLab: NetworkPolicy is enforced on a legacy-host-routing
// node and on an eBPF node of one cluster. The curler pod reaches the web
// server pod on each node; a deny-all ingress policy stops that (the
// connection times out: dropped, not refused, and the nodes count the
// drops); it stays stopped while both agents are SIGKILLed and restarted;
// an allow policy for the client's label on the port lets it through
// again; an egress deny-all on the client stops it from the other side;
// deleting the policies restores everything.
func TestPolicyMixedLab(t *testing.T) {
	l := upLab(t, 2, "--apply", "../../examples/switch/glia-fix-full.yaml",
		"--node-label", "lab-node-2:io.glia.enable-ebpf=true")
	l.ApplyStory()
	l.checkLegacyNode(t, "lab-node-1")
	l.checkBPFNode(t, "lab-node-2")
	l.Kubectl("label", "pod", "curler", "role=client")

	web := l.Pods("app=simple-webserver")
	if len(web) != 2 {
		t.Fatalf("%d web server pods, want one per node", len(web))
	}
	targets := map[string]string{} // node → URL of its web server pod
	webPod := map[string]string{}  // node → namespace/name of its web server pod
	for _, p := range web {
		targets[p.Spec.NodeName] = "http://" + p.Status.PodIP + ":8081"
		webPod[p.Spec.NodeName] = "default/" + p.Name
	}
	if len(targets) != 2 {
		t.Fatalf("web server pods are not on both nodes: %v", targets)
	}
	nodes := []string{"lab-node-1", "lab-node-2"}

	reachable := func(what string) {
		t.Helper()
		for _, n := range nodes {
			eventually(t, 60*time.Second, what+": curler → web server on "+n, func() error {
				out, err := l.Curl("curler", targets[n])
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			})
		}
	}
	// blocked waits until every web server is dropped (curl times out),
	// then requires it to stay so for a few more attempts.
	blocked := func(what string) {
		t.Helper()
		for _, n := range nodes {
			eventually(t, 60*time.Second, what+": curler → web server on "+n+" times out", func() error {
				out, err := l.Exec("curler", "curl", "-sS", "--max-time", "2", targets[n])
				if err == nil {
					return fmt.Errorf("answered: %s", out)
				}
				if !strings.Contains(out, "(28)") {
					return fmt.Errorf("failed other than by timing out (a drop): %s", out)
				}
				return nil
			})
		}
		stillBlocked(t, l, what, nodes, targets, 3)
	}

	// trace asks every node's agent for the verdicts of curler → each web
	// server on TCP 8081 and on UDP 8081, and requires tcp and udp.
	trace := func(what string, tcp, udp bool) {
		t.Helper()
		for _, asked := range nodes {
			for _, n := range nodes {
				for port, want := range map[string]bool{"8081/TCP": tcp, "8081/UDP": udp} {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					out, err := run(ctx, l.glia(), "policy", "trace", "--node", asked, "--from", "default/curler", "--to", webPod[n], "--port", port)
					cancel()
					verdict := "Verdict: DENIED"
					if want {
						verdict = "Verdict: ALLOWED"
					}
					if (err == nil) != want || !strings.Contains(out, verdict) {
						t.Errorf("%s: glia policy trace --node %s curler → %s %s: want %q (err %v):\n%s", what, asked, webPod[n], port, verdict, err, out)
					}
				}
			}
		}
	}

	reachable("without policy")
	trace("without policy", true, true)
	t.Log("no policy: curler reaches the web servers on the legacy and the eBPF node")

	l.Kubectl("apply", "-f", writeTemp(t, denyIngress))
	blocked("deny-all ingress")
	trace("deny-all ingress", false, false)
	for _, n := range nodes {
		st := l.Glia("status", "--node", n)
		m := regexp.MustCompile(`Policy enforcement:\s+Enabled\s+\[eBPF; (\d+)/\d+ endpoints isolated.*denied (\d+) ingress`).FindStringSubmatch(st)
		if m == nil {
			t.Errorf("glia status --node %s has no enabled policy enforcement line:\n%s", n, st)
			continue
		}
		if iso, _ := strconv.Atoi(m[1]); iso < 1 {
			t.Errorf("%s: %s endpoints isolated, want its web server:\n%s", n, m[1], st)
		}
		if denied, _ := strconv.ParseUint(m[2], 10, 64); denied == 0 {
			t.Errorf("%s dropped the curls but counts no denied ingress packet:\n%s", n, st)
		}
	}
	t.Log("deny-all ingress: both web servers dropped, both nodes count the drops")

	t.Run("AgentKillKeepsDeny", func(t *testing.T) {
		for _, n := range nodes {
			l.Glia("lab", "agent", "kill", n)
		}
		stillBlocked(t, l, "agents down", nodes, targets, 3)
		for _, n := range nodes {
			l.Glia("lab", "agent", "start", n)
		}
		// while the agents restore their state, and after
		stillBlocked(t, l, "agents restarting", nodes, targets, 5)
	})

	l.Kubectl("apply", "-f", writeTemp(t, allowClient))
	reachable("allow role=client on TCP 8081")
	trace("allow role=client on TCP 8081", true, false)
	t.Log("allow policy: curler (role=client) reaches both web servers again")

	l.Kubectl("apply", "-f", writeTemp(t, denyEgress))
	blocked("deny-all egress of the client")
	t.Log("deny-all egress on the client: both web servers dropped")

	l.Kubectl("delete", "networkpolicy", "web-deny-all", "web-allow-client", "client-deny-egress")
	reachable("policies deleted")
	t.Log("policies deleted: curler reaches both web servers")
}

// stillBlocked requires n rounds of curls to every target to time out.
func stillBlocked(t *testing.T, l *Lab, what string, nodes []string, targets map[string]string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		for _, node := range nodes {
			out, err := l.Exec("curler", "curl", "-sS", "--max-time", "2", targets[node])
			if err == nil || !strings.Contains(out, "(28)") {
				t.Errorf("%s, round %d: curler → web server on %s was not dropped (err %v): %s", what, i+1, node, err, out)
			}
		}
	}
}
