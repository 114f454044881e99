package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"glia.dev/glia/internal/api"
)

// TestNodeConfigSwitch is the users' story, walked with kubectl as they
// did it: a cluster with kube-proxy replacement on but legacy host routing
// (no eBPF masquerade); `kubectl exec` of `glia status` in an agent pod
// and `kubectl logs` say so and why; the switch is previewed, a
// GliaNodeConfig is applied, one node is labelled and its agent pod
// deleted; the DaemonSet's new pod runs BPF on that node — only that node —
// while curl loops, one from a pod on that very node, lose nothing, and
// the conn-disrupt check finds no interrupted connection. Then the label
// goes and the node switches back, again interrupting nothing. Then
// health probing and bad config.
func TestNodeConfigSwitch(t *testing.T) {
	l := upLab(t, 3, "--set", "kube-proxy-replacement=true")
	l.ApplyStory()
	l.Kubectl("run", "curler-n2", "--image", "curlimages/curl:latest", "--overrides", `{"spec":{"nodeName":"lab-node-2"}}`, "--command", "--", "sleep", "infinity")
	l.Kubectl("wait", "--for=condition=Ready", "pod/curler-n2", "--timeout=120s")
	for i := 1; i <= 3; i++ {
		l.checkLegacyNode(t, fmt.Sprintf("lab-node-%d", i))
	}

	// kubectl -n glia-system exec -it <agent pod> -- glia status, as in the story.
	old := l.agentPod(t, "lab-node-2")
	st := l.Kubectl("-n", "glia-system", "exec", old.Name, "--", "glia", "status")
	for _, want := range []string{"Host Routing: Legacy", "Masquerading: IPTables"} {
		if !strings.Contains(st, want) {
			t.Errorf("kubectl exec %s -- glia status lacks %q:\n%s", old.Name, want, st)
		}
	}
	// kubectl -n glia-system logs <agent pod>: the fallback, its key and its fix.
	logs := l.Kubectl("-n", "glia-system", "logs", old.Name, "-c", "glia-agent")
	for _, want := range []string{"falling back to legacy host routing", "enable-bpf-masquerade"} {
		if !strings.Contains(logs, want) {
			t.Errorf("kubectl logs %s lacks %q:\n%s", old.Name, want, tail(logs, 20))
		}
	}

	// The switch is previewed before anyone labels the node.
	prev := l.Glia("config", "preview", "--node", "lab-node-2", "-f", "../../examples/switch/glia-fix.yaml", "--label", "io.glia.enable-ebpf=true")
	for _, want := range []string{
		"Node configs: glia-system/glia-switch-from-iptables-ebpf",
		"Host Routing: Legacy -> BPF",
		"Masquerading: IPTables -> BPF",
		// The chart renders every key into glia-config, so the old value's
		// source is the ConfigMap.
		"enable-bpf-masquerade: false (ConfigMap glia-system/glia-config) -> true (GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf)",
		"needs an agent restart: true",
	} {
		if !strings.Contains(prev, want) {
			t.Errorf("preview lacks %q:\n%s", want, prev)
		}
	}
	// Previewing lab-node-1 (not to be labelled) predicts no change.
	if p := l.Glia("config", "preview", "--node", "lab-node-1", "-f", "../../examples/switch/glia-fix.yaml"); !strings.Contains(p, "Changes: none") {
		t.Errorf("preview of an unlabelled node predicts a change:\n%s", p)
	}

	// The switch, as in the story: apply, label, delete the node's agent
	// pod — with curl loops (from curler and from a pod on lab-node-2) and
	// the conn-disrupt check across it.
	var res, resN2 loopResult
	line, ok := l.connDisrupt(t, func() {
		loop := l.startCurlLoop(t, "curler", 30*time.Second)
		loopN2 := l.startCurlLoop(t, "curler-n2", 30*time.Second)
		l.Kubectl("apply", "-f", "../../examples/switch/glia-fix.yaml")
		l.Kubectl("label", "node", "lab-node-2", "--overwrite", "io.glia.enable-ebpf=true")
		// Before the restart the running agent says what is pending.
		l.checkConfigPending(t, old.Name)
		l.Kubectl("-n", "glia-system", "delete", "pod", old.Name)
		l.waitAgentPod(t, "lab-node-2", string(old.UID))
		res, resN2 = loop(), loopN2()
	})
	// The switch interrupts nothing.
	if !ok {
		t.Errorf("conn-disrupt across lab-node-2's switch from legacy to BPF: %s", line)
	} else {
		t.Logf("conn-disrupt across lab-node-2's switch from legacy to BPF: %s", line)
	}
	for _, r := range []loopResult{res, resN2} {
		t.Logf("curl loop from %s across lab-node-2's switch to BPF: %s", r.from, r.summary)
		if r.failed != 0 {
			t.Errorf("requests from %s failed across the switch:\n%s", r.from, r.out)
		}
	}

	// kubectl exec glia status on the new pod: BPF, BPF.
	cur := l.agentPod(t, "lab-node-2")
	st = l.Kubectl("-n", "glia-system", "exec", cur.Name, "--", "glia", "status")
	for _, want := range []string{"Host Routing: BPF", "Masquerading: BPF"} {
		if !strings.Contains(st, want) {
			t.Errorf("kubectl exec %s -- glia status (the new pod) lacks %q:\n%s", cur.Name, want, st)
		}
	}
	// The restart applied it: nothing pending any more.
	if strings.Contains(st, "Config pending:") {
		t.Errorf("kubectl exec %s -- glia status (the new pod, config applied) still shows a pending config:\n%s", cur.Name, st)
	}
	l.checkBPFNode(t, "lab-node-2")
	l.checkLegacyNode(t, "lab-node-1")
	l.checkLegacyNode(t, "lab-node-3")
	if st := l.Glia("status", "--node", "lab-node-2"); !strings.Contains(st, "GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf (1)") {
		t.Errorf("status of lab-node-2 does not name the node config among its sources:\n%s", st)
	}
	if view := l.Glia("config", "view", "--node", "lab-node-2"); !strings.Contains(view, "GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf") {
		t.Errorf("config view of lab-node-2 does not name the node config:\n%s", view)
	}

	// And back: the label goes, the node's agent pod is deleted, the new
	// one runs the legacy datapath again — interrupting nothing either.
	old = cur
	line, ok = l.connDisrupt(t, func() {
		l.Kubectl("label", "node", "lab-node-2", "io.glia.enable-ebpf-")
		l.Kubectl("-n", "glia-system", "delete", "pod", old.Name)
		l.waitAgentPod(t, "lab-node-2", string(old.UID))
	})
	if !ok {
		t.Errorf("conn-disrupt across lab-node-2's switch from BPF back to legacy: %s", line)
	} else {
		t.Logf("conn-disrupt across lab-node-2's switch from BPF back to legacy: %s", line)
	}
	l.checkLegacyNode(t, "lab-node-2")
	l.CheckConnectivity()

	t.Run("Health", l.checkHealth)
	t.Run("BadConfig", l.checkBadConfig)
}

type loopResult struct {
	from, out, summary string
	failed             int
}

// startCurlLoop runs a curl loop from pod from to every web pod and the
// Service for d; the returned function waits for it.
func (l *Lab) startCurlLoop(t *testing.T, from string, d time.Duration) func() loopResult {
	var targets []string
	for _, p := range l.Pods("app=simple-webserver") {
		targets = append(targets, "http://"+p.Status.PodIP+":8081")
	}
	targets = append(targets, "http://simple-webserver-service:8081")
	script := fmt.Sprintf(`end=$(( $(date +%%s) + %d )); n=0; f=0
while [ $(date +%%s) -lt $end ]; do
  for u in %s; do n=$((n+1)); curl -sf --max-time 2 -o /dev/null "$u" || { f=$((f+1)); echo "FAIL $(date +%%T.%%N) $u"; }; done
  sleep 0.2
done
echo "requests=$n failed=$f"`, int(d.Seconds()), strings.Join(targets, " "))
	done := make(chan loopResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
		defer cancel()
		out, err := run(ctx, l.glia(), "lab", "exec", from, "--", "sh", "-c", script)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		r := loopResult{from: from, out: out, summary: lines[len(lines)-1]}
		var n int
		if _, serr := fmt.Sscanf(r.summary, "requests=%d failed=%d", &n, &r.failed); serr != nil || err != nil {
			r.failed = -1 // the loop did not finish: count it as failed
			r.summary = fmt.Sprintf("%s (%v)", r.summary, err)
		}
		done <- r
	}()
	time.Sleep(2 * time.Second)
	return func() loopResult { return <-done }
}

type healthReport struct {
	Interval time.Duration `json:"interval"`
	Nodes    []struct {
		Name string `json:"name"`
	} `json:"nodes"`
}

func (l *Lab) checkHealth(t *testing.T) {
	var out string
	eventually(t, 30*time.Second, "3/3 reachable with RTTs", func() error {
		out = l.Glia("health", "status", "--node", "lab-node-1", "-v")
		if !strings.Contains(out, "Cluster health: 3/3 reachable") {
			return fmt.Errorf("not 3/3:\n%s", out)
		}
		return nil
	})
	if n := strings.Count(out, "ICMP to stack: OK, RTT="); n != 6 {
		t.Errorf("want 6 ICMP RTTs (3 nodes × host and endpoint), got %d:\n%s", n, out)
	}
	if n := strings.Count(out, "HTTP to agent: OK, RTT="); n != 6 {
		t.Errorf("want 6 HTTP RTTs, got %d:\n%s", n, out)
	}
	var rep healthReport
	if err := json.Unmarshal([]byte(l.Glia("health", "status", "--node", "lab-node-1", "-o", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	// Stopping lab-node-3's agent makes it unreachable over HTTP within two
	// probe intervals (plus one probe timeout), named in the output.
	l.Glia("lab", "agent", "stop", "lab-node-3")
	defer l.Glia("lab", "agent", "start", "lab-node-3")
	eventually(t, 2*rep.Interval+5*time.Second, "lab-node-3 unreachable over HTTP", func() error {
		out = l.Glia("health", "status", "--node", "lab-node-1")
		if !strings.Contains(out, "Cluster health: 2/3 reachable") || !strings.Contains(out, "lab-node-3") || !strings.Contains(out, "HTTP to agent") {
			return fmt.Errorf("not reported yet:\n%s", out)
		}
		return nil
	})
	t.Logf("with lab-node-3's agent stopped:\n%s", out)
}

// gliaErr runs glia expecting a failure and returns its output.
func (l *Lab) gliaErr(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := run(ctx, l.glia(), args...)
	if err == nil {
		t.Fatalf("glia %s succeeded, want an error:\n%s", strings.Join(args, " "), out)
	}
	return out
}

func (l *Lab) setConfigMap(t *testing.T, data map[string]string) {
	t.Helper()
	ctx := context.Background()
	cm, err := l.cs.CoreV1().ConfigMaps("glia-system").Get(ctx, "glia-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = data
	if _, err := l.cs.CoreV1().ConfigMaps("glia-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (l *Lab) checkBadConfig(t *testing.T) {
	good := map[string]string{"kube-proxy-replacement": "true"}
	defer l.setConfigMap(t, good)
	for _, tc := range []struct {
		name string
		data map[string]string
		want []string
	}{
		{"bad value", map[string]string{"kube-proxy-replacement": "true", "enable-bpf-masquerade": "maybe"},
			[]string{"enable-bpf-masquerade", `"maybe"`, "ConfigMap glia-system/glia-config", `"true" or "false"`}},
		{"unknown key", map[string]string{"kube-proxy-replacement": "true", "enable-bpf-masq": "true"},
			[]string{`unknown config key "enable-bpf-masq"`, "enable-bpf-masquerade"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.setConfigMap(t, tc.data)
			out := l.gliaErr(t, "config", "preview", "--node", "lab-node-1")
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("preview error lacks %q:\n%s", w, out)
				}
			}
			// The running agent is untouched and says at once that its
			// sources no longer resolve; a restarted one refuses to start and says why.
			var st string
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
				st = l.Glia("status", "--node", "lab-node-1")
				if strings.Contains(st, "Config pending: error") || time.Now().After(deadline) {
					break
				}
			}
			if !strings.Contains(st, "Config pending: error") || !strings.Contains(st, tc.want[0]) {
				t.Errorf("glia status of the running agent does not show the pending error (%s) within 30s:\n%s", tc.want[0], st)
			}
			out = l.gliaErr(t, "lab", "agent", "restart", "lab-node-1")
			if !strings.Contains(out, "refusing to start") || !strings.Contains(out, tc.want[0]) {
				t.Errorf("glia lab agent restart does not say why the agent refused to start (%s):\n%s", tc.want[0], out)
			}
			b := l.agentLog(t, "lab-node-1")
			if !strings.Contains(b, "refusing to start") || !strings.Contains(b, tc.want[0]) {
				t.Errorf("kubectl logs of the agent pod does not say why it refused to start (%s):\n%s", tc.want[0], tail(b, 10))
			}
			l.setConfigMap(t, good)
			l.Glia("lab", "agent", "start", "lab-node-1")
		})
	}
	t.Run("selector matching no node", func(t *testing.T) {
		f := writeTemp(t, `apiVersion: glia.dev/v1alpha1
kind: GliaNodeConfig
metadata: {namespace: glia-system, name: nobody}
spec:
  nodeSelector: {matchLabels: {io.glia.pool: "does-not-exist"}}
  defaults: {debug: "true"}
`)
		out := l.Glia("config", "preview", "--node", "lab-node-1", "-f", f)
		if !strings.Contains(out, "GliaNodeConfig glia-system/nobody selects no node") {
			t.Errorf("preview does not warn about a selector matching nothing:\n%s", out)
		}
	})
	t.Run("two node configs set one key", func(t *testing.T) {
		f := writeTemp(t, `apiVersion: glia.dev/v1alpha1
kind: GliaNodeConfig
metadata: {namespace: glia-system, name: a-first}
spec:
  nodeSelector: {matchLabels: {kubernetes.io/hostname: lab-node-1}}
  defaults: {bpf-lb-algorithm: "maglev"}
---
apiVersion: glia.dev/v1alpha1
kind: GliaNodeConfig
metadata: {namespace: glia-system, name: b-second}
spec:
  nodeSelector: {matchLabels: {kubernetes.io/hostname: lab-node-1}}
  defaults: {bpf-lb-algorithm: "random"}
`)
		out := l.Glia("config", "preview", "--node", "lab-node-1", "-f", f)
		if !strings.Contains(out, "a-first") || !strings.Contains(out, "b-second") || !strings.Contains(out, "Warning:") {
			t.Errorf("preview does not warn naming both node configs:\n%s", out)
		}
	})
}

// pendingLine is what the agent of lab-node-2 says once the story's node
// config selects it and before its restart.
const pendingLine = "Config pending: enable-bpf-masquerade false→true (GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf), restart the agent pod to apply"

// checkConfigPending checks that the agent pod pod (not restarted since the
// node config and the label) tells at once that a config change waits for
// its restart: `glia status` (text and JSON, by kubectl exec as in the
// story) and its Node's condition GliaConfigPending.
func (l *Lab) checkConfigPending(t *testing.T, pod string) {
	t.Helper()
	var st string
	deadline := time.Now().Add(30 * time.Second)
	for {
		st = l.Kubectl("-n", "glia-system", "exec", pod, "-c", "glia-agent", "--", "glia", "status")
		if strings.Contains(st, pendingLine) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(st, pendingLine) {
		t.Errorf("kubectl exec %s -- glia status does not show the pending config within 30s; want %q:\n%s", pod, pendingLine, st)
		return
	}
	var s api.Status
	if err := json.Unmarshal([]byte(l.Kubectl("-n", "glia-system", "exec", pod, "-c", "glia-agent", "--", "glia", "status", "-o", "json")), &s); err != nil {
		t.Fatalf("glia status -o json: %v", err)
	}
	if p := s.ConfigPending; p == nil || p.Error != "" || len(p.Changes) != 1 || p.Changes[0].Key != "enable-bpf-masquerade" ||
		p.Changes[0].From != "false" || p.Changes[0].To != "true" || p.Changes[0].Source != "GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf" {
		t.Errorf("glia status -o json: configPending = %+v, want enable-bpf-masquerade false→true from the node config", p)
	}
	cond := l.Kubectl("get", "node", "lab-node-2", "-o", `jsonpath={.status.conditions[?(@.type=="GliaConfigPending")].status} {.status.conditions[?(@.type=="GliaConfigPending")].reason}`)
	if strings.TrimSpace(cond) != "True RestartToApply" {
		t.Errorf("node lab-node-2 condition GliaConfigPending = %q, want \"True RestartToApply\"", cond)
	}
}
