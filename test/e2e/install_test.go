package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"glia.dev/glia/internal/lab"
	"glia.dev/glia/internal/lab/noderunner"
)

// TestInstall checks glia's install the way an operator meets it: the chart
// lints, renders the story's values into manifests the API server accepts,
// refuses a wrong value naming it; the agent runs as the DaemonSet's pod
// with its own least-privilege ServiceAccount (no system:masters); and
// `helm uninstall` takes the CNI config and plugin off every node.
func TestInstall(t *testing.T) {
	l := upLab(t, 2)
	chart := "../../deploy/chart/glia"
	helm := filepath.Join(l.bin, "helm")

	t.Run("HelmLint", func(t *testing.T) {
		out, err := run(context.Background(), helm, "lint", chart)
		if err != nil || !strings.Contains(out, "0 chart(s) failed") {
			t.Fatalf("helm lint %s: %v\n%s", chart, err, out)
		}
		if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
			t.Errorf("helm lint is not clean:\n%s", out)
		}
	})

	t.Run("StoryValuesApplyServerSide", func(t *testing.T) {
		out, err := run(context.Background(), helm, "template", "glia", chart, "-n", "glia-system", "-f", "../../examples/story/values.yaml")
		if err != nil {
			t.Fatalf("helm template with the story's values: %v\n%s", err, out)
		}
		for _, want := range []string{`kube-proxy-replacement: "true"`, `enable-bpf-masquerade: "true"`} {
			if !strings.Contains(out, want) {
				t.Errorf("the story's values do not render %s", want)
			}
		}
		f := writeTemp(t, out)
		// The release's objects already exist in the lab; a server-side dry
		// run still validates every object against the API server's schema.
		res := l.Kubectl("apply", "--dry-run=server", "-f", f)
		for _, want := range []string{"daemonset.apps/glia", "configmap/glia-config", "clusterrole.rbac.authorization.k8s.io/glia", "serviceaccount/glia"} {
			if !strings.Contains(res, want) {
				t.Errorf("kubectl apply --dry-run=server did not take %s:\n%s", want, res)
			}
		}
	})

	t.Run("WrongValueRefused", func(t *testing.T) {
		for _, tc := range []struct{ set, name string }{
			{"bpf.masquerade=maybe", "masquerade"},
			{"routingMode=vxlan", "routingMode"},
			{"kubeProxyReplacment=true", "kubeProxyReplacment"},
		} {
			// --set-string makes every value a string; --set types it.
			for _, flag := range []string{"--set-string", "--set"} {
				out, err := run(context.Background(), helm, "install", "glia-bad", chart, "-n", "glia-bad", "--dry-run=server",
					"--kubeconfig", l.kc, flag, tc.set)
				if err == nil || !strings.Contains(out, tc.name) {
					t.Errorf("helm install %s %s: err=%v, want a refusal naming %q:\n%s", flag, tc.set, err, tc.name, out)
				}
			}
		}
	})

	t.Run("AgentServiceAccountLeastPrivilege", func(t *testing.T) {
		as := "--as=system:serviceaccount:glia-system:glia"
		for _, tc := range []struct {
			verb, resource, ns string
			want               string
		}{
			{"watch", "nodes", "", "yes"},
			{"patch", "nodes", "", "yes"},
			{"patch", "nodes/status", "", "yes"},
			{"list", "services", "", "yes"},
			{"watch", "endpointslices.discovery.k8s.io", "", "yes"},
			{"list", "glianodeconfigs.glia.dev", "glia-system", "yes"},
			{"get", "configmaps/glia-config", "glia-system", "yes"},
			{"get", "configmaps/kube-root-ca.crt", "glia-system", "no"},
			{"get", "daemonsets.apps/glia", "glia-system", "yes"},
			{"get", "secrets", "glia-system", "no"},
			{"list", "secrets", "", "no"},
			{"create", "pods", "default", "no"},
			{"delete", "pods", "default", "no"},
			{"update", "pods", "glia-system", "no"},
			{"update", "configmaps", "glia-system", "no"},
			{"delete", "nodes", "", "no"},
		} {
			args := []string{"--kubeconfig", l.kc, "auth", "can-i", tc.verb, tc.resource, as}
			if tc.ns != "" {
				args = append(args, "-n", tc.ns)
			}
			out, _ := run(context.Background(), "kubectl", args...)
			// The answer is the last line (a warning may come first).
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if got := strings.TrimSpace(lines[len(lines)-1]); got != tc.want {
				t.Errorf("kubectl auth can-i %s %s (-n %q) as glia's ServiceAccount = %q, want %s", tc.verb, tc.resource, tc.ns, got, tc.want)
			}
		}
	})

	t.Run("AgentRunsAsDaemonSetPod", func(t *testing.T) {
		for _, n := range []string{"lab-node-1", "lab-node-2"} {
			p := l.agentPod(t, n)
			if p.Spec.ServiceAccountName != "glia" || !p.Spec.HostNetwork {
				t.Errorf("agent pod %s: serviceAccount %q hostNetwork %t, want glia and true", p.Name, p.Spec.ServiceAccountName, p.Spec.HostNetwork)
			}
			pid := agentPID(t, n, p.Namespace, p.Name)
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil {
				t.Fatal(err)
			}
			cmd := strings.ReplaceAll(string(b), "\x00", " ")
			if strings.Contains(cmd, "--kubeconfig") || !strings.Contains(cmd, "--node-name="+n) {
				t.Errorf("agent on %s runs %q: want in-cluster config (no --kubeconfig) and --node-name=%s", n, cmd, n)
			}
			// Its identity is the projected ServiceAccount token, at
			// /var/run/secrets/… in the container (/var/run is a symlink to
			// /run, which a walk through /proc/PID/root would resolve in
			// this test's root: name the target path).
			tok, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/run/secrets/kubernetes.io/serviceaccount/token", pid))
			if err != nil || strings.Count(string(tok), ".") != 2 {
				t.Errorf("agent on %s has no projected ServiceAccount token: %v", n, err)
			}
			// The node's taint is gone: the agent removed it once ready.
			node, err := l.cs.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, taint := range node.Spec.Taints {
				if taint.Key == lab.AgentNotReadyTaint {
					t.Errorf("node %s still has taint %s", n, taint.Key)
				}
			}
		}
	})

	// Last: uninstalling takes glia's CNI config and plugin off every node
	// (the agents do it on SIGTERM once their DaemonSet is gone).
	t.Run("UninstallRemovesCNI", func(t *testing.T) {
		layout, err := lab.DefaultLayout(l.bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"lab-node-1", "lab-node-2"} {
			for _, f := range []string{filepath.Join(layout.CNIConfDir(n), "05-glia.conflist"), filepath.Join(layout.CNIBinDir(n), "glia-cni")} {
				if _, err := os.Stat(f); err != nil {
					t.Fatalf("before uninstall: %v", err)
				}
			}
		}
		out, err := run(context.Background(), helm, "uninstall", "glia", "-n", "glia-system", "--kubeconfig", l.kc, "--wait", "--timeout", "2m")
		if err != nil {
			t.Fatalf("helm uninstall: %v\n%s", err, out)
		}
		for _, n := range []string{"lab-node-1", "lab-node-2"} {
			eventually(t, time.Minute, "CNI config and plugin removed from "+n, func() error {
				for _, f := range []string{filepath.Join(layout.CNIConfDir(n), "05-glia.conflist"), filepath.Join(layout.CNIBinDir(n), "glia-cni")} {
					if _, err := os.Stat(f); err == nil {
						return fmt.Errorf("%s still there", f)
					}
				}
				return nil
			})
		}
	})
}

// agentPID finds the agent container's process of pod ns/name on node.
func agentPID(t *testing.T, node, ns, name string) int {
	t.Helper()
	layout, err := lab.DefaultLayout("")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := noderunner.FindContainerPID(layout.RunnerStateDir(node), ns, name, lab.AgentContainer)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
