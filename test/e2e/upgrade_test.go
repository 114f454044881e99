package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"glia.dev/glia/internal/lab"
	"glia.dev/glia/internal/maps"
)

// upgradeFromCommit is the earlier glia the upgrade test installs and
// upgrades from: the newest commit on main that has the Helm chart when
// the test was written. Move it forward deliberately (to a commit on main
// whose agent the next release must upgrade from) and run
// `make old-glia` once: it builds that commit's glia, glia-agent and
// glia-cni into bin/images/glia-<first 12 digits>/ (about 3 minutes cold,
// nothing when cached) with its chart beside them.
const upgradeFromCommit = "500e24591aee"

// TestUpgradeDowngrade installs glia at upgradeFromCommit (its binaries
// through image glia:<commit>, then its chart), starts the conn-disrupt
// workload, `helm upgrade`s to this checkout's chart and binaries with the
// DaemonSet's rolling update and requires no interrupted connection; then
// `helm rollback`s to the earlier release and requires the same.
func TestUpgradeDowngrade(t *testing.T) {
	bin := binDir(t)
	build := exec.Command("../../scripts/build-old-glia.sh", upgradeFromCommit, bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build glia %s: %v\n%s", upgradeFromCommit, err, out)
	} else {
		t.Logf("%s", strings.TrimSpace(string(out)))
	}
	oldChart := filepath.Join(bin, "images", "glia-"+upgradeFromCommit, "chart")

	// The earlier release: its chart, its binaries (a newer chart may pass
	// the earlier agent flags it does not know).
	l := upLab(t, 2, append(bpfSet, "--chart", oldChart, "--set", "image.tag="+upgradeFromCommit)...)
	layout, err := lab.DefaultLayout(l.bin)
	if err != nil {
		t.Fatal(err)
	}
	helm := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		args = append(args, "--namespace", lab.AgentNamespace, "--kubeconfig", l.kc)
		if out, err := run(ctx, filepath.Join(l.bin, "helm"), args...); err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rolledOut := func(what string) {
		t.Helper()
		l.Kubectl("-n", lab.AgentNamespace, "rollout", "status", "daemonset/"+lab.AgentDaemonSet, "--timeout=4m")
		for _, n := range []string{"lab-node-1", "lab-node-2"} {
			p := l.agentPod(t, n)
			t.Logf("%s: %s runs %s", what, n, p.Spec.Containers[0].Image)
		}
	}
	// agentsRun requires every agent to run the earlier release's image
	// (old) or another (!old).
	agentsRun := func(old bool) {
		t.Helper()
		for _, n := range []string{"lab-node-1", "lab-node-2"} {
			p := l.agentPod(t, n)
			for _, c := range p.Spec.Containers {
				if c.Name == lab.AgentContainer && strings.HasSuffix(c.Image, ":"+upgradeFromCommit) != old {
					t.Fatalf("%s's agent runs %s, want the earlier release: %v", n, c.Image, old)
				}
			}
		}
	}

	// layoutPinned says whether node's agent pinned glia_layout, the map
	// of layout versions the earlier release does not know: which binaries
	// ran, not only which image the pod names.
	layoutPinned := func(node string) bool {
		t.Helper()
		_, err := os.Stat(filepath.Join(layout.AgentBPFDir(node), maps.NameLayout))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return err == nil
	}

	rolledOut("installed " + upgradeFromCommit)
	agentsRun(true)
	for _, n := range []string{"lab-node-1", "lab-node-2"} {
		if layoutPinned(n) {
			t.Fatalf("%s has %s pinned before the upgrade: not the earlier release's agent", n, maps.NameLayout)
		}
	}

	line, ok := l.connDisrupt(t, func() {
		helm("upgrade", lab.ReleaseName, layout.ChartDir(), "--reuse-values", "--set", "image.tag=")
		rolledOut("upgraded")
		agentsRun(false)
		for _, n := range []string{"lab-node-1", "lab-node-2"} {
			if !layoutPinned(n) {
				t.Errorf("%s has no %s after the upgrade: the new agent did not record its maps' layouts", n, maps.NameLayout)
			}
		}
	})
	t.Logf("upgrade %s -> this checkout: %s", upgradeFromCommit, line)
	if !ok {
		t.Errorf("connections interrupted by the upgrade: %s", line)
	}

	line, ok = l.connDisrupt(t, func() {
		helm("rollback", lab.ReleaseName)
		rolledOut("rolled back")
		agentsRun(true)
	})
	t.Logf("downgrade this checkout -> %s: %s", upgradeFromCommit, line)
	if !ok {
		t.Errorf("connections interrupted by the downgrade: %s", line)
	}
}
