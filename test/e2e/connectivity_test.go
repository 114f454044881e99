package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var summaryLine = regexp.MustCompile(`All (\d+) tests \((\d+) actions\) successful, (\d+) tests skipped, (\d+) scenarios skipped\.`)

// connectivity runs `glia connectivity test ARGS` and returns its output and
// error.
func (l *Lab) connectivity(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return run(ctx, l.glia(), append([]string{"connectivity", "test"}, args...)...)
}

// TestConnectivityLegacy is issue 6's acceptance on a legacy lab: every
// connectivity test passes; a deleted route makes the cross-node test fail
// naming the path; the conn-disrupt check across an agent SIGKILL and
// restart reports no interruption.
func TestConnectivityLegacy(t *testing.T) {
	l := upLab(t, 3)
	out, err := l.connectivity(t, 5*time.Minute, "--keep-workloads")
	if err != nil {
		t.Fatalf("glia connectivity test: %v\n%s", err, out)
	}
	m := summaryLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary line in:\n%s", out)
	}
	t.Logf("%s", m[0])
	if m[1] == "0" || m[2] == "0" {
		t.Errorf("summary line counts nothing: %s", m[0])
	}

	t.Run("BrokenRouteFailsCrossNode", func(t *testing.T) {
		ctx := context.Background()
		pod := func(name string) (node string) {
			pl, err := l.cs.CoreV1().Pods("glia-test").List(ctx, metav1.ListOptions{LabelSelector: "name=" + name})
			if err != nil || len(pl.Items) != 1 {
				t.Fatalf("pods name=%s in glia-test: %v (%d)", name, err, len(pl.Items))
			}
			return pl.Items[0].Spec.NodeName
		}
		src, dst := pod("client"), pod("echo-other-node")
		n, err := l.cs.CoreV1().Nodes().Get(ctx, dst, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cidr := n.Spec.PodCIDR
		// The agent watches its routes and puts a deleted one back within
		// a second or two: stop it first, so the broken path stays broken
		// while the test runs; starting it again repairs the path.
		l.Glia("lab", "agent", "stop", src)
		started := false
		startAgent := func() {
			if !started {
				started = true
				l.Glia("lab", "agent", "start", src)
			}
		}
		defer startAgent()
		if out, err := l.ExecNode(src, "ip", "route", "del", cidr); err != nil {
			t.Fatalf("ip route del %s on %s: %v\n%s", cidr, src, err, out)
		}
		out, err := l.connectivity(t, 2*time.Minute, "--keep-workloads", "--test", "^pod-to-pod-cross-node$")
		if err == nil {
			t.Fatalf("connectivity test passed with %s's route to %s (%s) deleted:\n%s", src, dst, cidr, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "tests failed") || strings.Contains(line, "path: ") {
				t.Logf("%s", strings.TrimSpace(line))
			}
		}
		for _, want := range []string{
			"1/1 tests failed (2/2 actions)",
			"Test [pod-to-pod-cross-node]:",
			"path: " + src + " -> " + dst + ", pod CIDR " + cidr,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		// The agent restores the route; the test passes again.
		startAgent()
		eventually(t, 90*time.Second, "cross-node path restored by the agent", func() error {
			out, err := l.connectivity(t, time.Minute, "--keep-workloads", "--test", "^pod-to-pod-cross-node$")
			if err != nil {
				return err
			}
			if !summaryLine.MatchString(out) {
				return errNoSummary(out)
			}
			return nil
		})
	})

	t.Run("ConnDisruptAcrossAgentKill", func(t *testing.T) {
		// lab-node-2's agent is SIGKILLed and restarted while connections
		// cross it.
		out := l.Glia("connectivity", "test", "--include-conn-disrupt-test", "--conn-disrupt-setup")
		t.Logf("setup:\n%s", out)
		l.Glia("lab", "agent", "kill", "lab-node-2")
		time.Sleep(3 * time.Second) // traffic flows while no agent runs
		l.Glia("lab", "agent", "start", "lab-node-2")
		time.Sleep(3 * time.Second)
		out, err := l.connectivity(t, 3*time.Minute, "--include-conn-disrupt-test", "--conn-disrupt-check", "--test", "^no-interrupted-connections$")
		if err != nil {
			t.Fatalf("conn-disrupt check across SIGKILL and restart of lab-node-2's agent: %v\n%s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "conn-disrupt:") || summaryLine.MatchString(line) {
				t.Logf("%s", strings.TrimSpace(line))
			}
		}
		if !strings.Contains(out, " 0 resets, 0 stalls > 1s; ") || !strings.Contains(out, " requests, 0 failed") {
			t.Errorf("conn-disrupt totals missing or non-zero:\n%s", out)
		}
		if !summaryLine.MatchString(out) {
			t.Errorf("no summary line:\n%s", out)
		}
	})
}

type errNoSummary string

func (e errNoSummary) Error() string { return "no summary line in: " + string(e) }

// connectivityPasses runs the whole connectivity suite and requires its
// success summary line.
func (l *Lab) connectivityPasses(t *testing.T) {
	t.Helper()
	out, err := l.connectivity(t, 5*time.Minute)
	m := summaryLine.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("glia connectivity test: %v\n%s", err, out)
	}
	t.Logf("%s", m[0])
}

// connDisrupt runs the conn-disrupt setup, then change(), then the check,
// and returns the check's conn-disrupt line (with the check's output when
// it failed) and whether it passed.
func (l *Lab) connDisrupt(t *testing.T, change func()) (string, bool) {
	t.Helper()
	l.Glia("connectivity", "test", "--include-conn-disrupt-test", "--conn-disrupt-setup")
	change()
	time.Sleep(3 * time.Second)
	out, err := l.connectivity(t, 3*time.Minute, "--include-conn-disrupt-test", "--conn-disrupt-check", "--test", "^no-interrupted-connections$")
	line := ""
	for _, s := range strings.Split(out, "\n") {
		if strings.Contains(s, "conn-disrupt:") && strings.Contains(s, "resets") {
			line = strings.TrimSpace(s)
		}
	}
	if line == "" {
		t.Fatalf("the conn-disrupt check reported no totals (%v):\n%s", err, out)
	}
	if err != nil {
		// What failed, for the caller's verdict.
		line += "\n" + out
	}
	return line, err == nil
}
