package lab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestNodeBinds: every node path a DaemonSet mounts is the node's own, in
// mount order (a parent before what lies in it), backed by per-node
// directories only.
func TestNodeBinds(t *testing.T) {
	l := Layout{Base: "/run/glia-lab", CgroupRoot: "/sys/fs/cgroup/unified/glia-lab", BPFRoot: "/sys/fs/bpf/glia-lab"}
	got := l.NodeBinds("lab-node-2")
	want := []Bind{
		{"/run/glia-lab/nodes/lab-node-2/root/opt/cni/bin", "/opt/cni/bin"},
		{"/run/glia-lab/nodes/lab-node-2/root/etc/cni/net.d", "/etc/cni/net.d"},
		{"/run/glia-lab/nodes/lab-node-2/root/var/run/glia", "/var/run/glia"},
		{"/run/glia-lab/nodes/lab-node-2/root/var/lib/glia", "/var/lib/glia"},
		{"/sys/fs/cgroup/unified/glia-lab/lab-node-2", "/run/glia/cgroupv2"},
		{"/sys/fs/bpf/glia-lab/lab-node-2", "/sys/fs/bpf"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NodeBinds (-want +got):\n%s", diff)
	}
	other := l.NodeBinds("lab-node-3")
	for i := range got {
		if got[i].Source == other[i].Source {
			t.Errorf("nodes share %s", got[i].Source)
		}
	}
	// The agent's socket, state and pins as the host sees them lie in those binds.
	for _, p := range []string{l.AgentSocket("lab-node-2"), l.AgentStateDir("lab-node-2"), l.AgentBPFDir("lab-node-2"), l.CNIConfDir("lab-node-2")} {
		if !slices.ContainsFunc(got, func(b Bind) bool { return strings.HasPrefix(p, b.Source+"/") || p == b.Source }) {
			t.Errorf("%s lies in no bind", p)
		}
	}
}

// TestPrepareNodeFS: mount points inside an earlier bind are made in its
// source, the others on the "host" (a temp dir standing in for /), and only
// what was missing is reported as made.
func TestPrepareNodeFS(t *testing.T) {
	tmp := t.TempDir()
	l := &Lab{layout: Layout{Base: filepath.Join(tmp, "lab"), CgroupRoot: filepath.Join(tmp, "cg"), BPFRoot: filepath.Join(tmp, "bpf")}}
	host := filepath.Join(tmp, "host")
	if err := os.MkdirAll(filepath.Join(host, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	saved := NodePaths
	t.Cleanup(func() { NodePaths = saved })
	NodePaths = []string{host + "/opt/cni/bin", host + "/etc/cni/net.d", host + "/run/glia", host + "/run/glia/cgroupv2"}
	made, err := l.prepareNodeFS("lab-node-1")
	if err != nil {
		t.Fatal(err)
	}
	wantMade := []string{host + "/opt", host + "/opt/cni", host + "/opt/cni/bin", host + "/etc/cni", host + "/etc/cni/net.d", host + "/run", host + "/run/glia"}
	if diff := cmp.Diff(wantMade, made); diff != "" {
		t.Errorf("made (-want +got):\n%s", diff)
	}
	// /run/glia/cgroupv2 lies in the /run/glia bind: its mount point is in
	// that bind's source, not on the host.
	if _, err := os.Stat(filepath.Join(l.layout.NodeRoot("lab-node-1"), host, "run/glia/cgroupv2")); err != nil {
		t.Errorf("mount point inside the bind: %v", err)
	}
	if _, err := os.Stat(host + "/run/glia/cgroupv2"); err == nil {
		t.Errorf("the host got %s/run/glia/cgroupv2", host)
	}
	// Made again: nothing new. Removed: only the empty directories go.
	if again, err := l.prepareNodeFS("lab-node-1"); err != nil || len(again) != 0 {
		t.Errorf("second prepare made %v (%v), want nothing", again, err)
	}
	if err := os.WriteFile(host+"/etc/cni/net.d/10-other.conflist", []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	removeHostDirs(made)
	for _, p := range []string{host + "/opt", host + "/run"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	if _, err := os.Stat(host + "/etc/cni/net.d/10-other.conflist"); err != nil {
		t.Errorf("a file the lab did not make was removed: %v", err)
	}
}

// TestChartArgs: config keys become the chart values that render them,
// checked as the agent checks them; chart values pass; bad input is
// refused naming it.
func TestChartArgs(t *testing.T) {
	got, err := ChartArgs(map[string]string{"kube-proxy-replacement": "true", "bpf.masquerade": "true", "routingMode": "tunnel"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--set-json", "kubeProxyReplacement=true", "--set", "bpf.masquerade=true", "--set", "routingMode=tunnel"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ChartArgs (-want +got):\n%s", diff)
	}
	for _, bad := range []map[string]string{
		{"enable-bpf-masquerade": "maybe"},
		{"a b": "c"},
	} {
		if _, err := ChartArgs(bad); err == nil {
			t.Errorf("ChartArgs(%v) accepted", bad)
		}
	}
}
