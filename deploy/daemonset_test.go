package deploy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The DaemonSet as INSTALL-CONTRACT.md describes it: the node runner, the
// image and the agent rely on these paths, commands and ports. A drift from
// the contract fails here.

type mountWant struct {
	Volume, Path string
	Propagation  corev1.MountPropagationMode // "" = none
	ReadOnly     bool
}

func mountsOf(c corev1.Container) []mountWant {
	var out []mountWant
	for _, m := range c.VolumeMounts {
		w := mountWant{Volume: m.Name, Path: m.MountPath, ReadOnly: m.ReadOnly}
		if m.MountPropagation != nil {
			w.Propagation = *m.MountPropagation
		}
		out = append(out, w)
	}
	return out
}

type hostPathWant struct {
	Path string
	Type corev1.HostPathType
}

func TestDaemonSetContract(t *testing.T) {
	m := render(t)
	ds := m.daemonSet(t)
	if ds.Namespace != testNamespace {
		t.Fatalf("DaemonSet in %q, want %q", ds.Namespace, testNamespace)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("hostNetwork is not true")
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if diff := cmp.Diff([]corev1.Toleration{{Operator: corev1.TolerationOpExists}}, spec.Tolerations); diff != "" {
		t.Errorf("tolerations (-want +got):\n%s", diff)
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != 1 {
		t.Errorf("terminationGracePeriodSeconds %v, want 1", spec.TerminationGracePeriodSeconds)
	}
	two := intstr.FromInt32(2)
	if diff := cmp.Diff(appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &two}}, ds.Spec.UpdateStrategy); diff != "" {
		t.Errorf("updateStrategy (-want +got):\n%s", diff)
	}
	sel := ds.Spec.Selector.MatchLabels
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("the pod template lacks the selector's label %s=%s", k, v)
		}
	}

	// Volumes.
	wantVolumes := map[string]hostPathWant{
		"bpf-maps":     {"/sys/fs/bpf", corev1.HostPathDirectoryOrCreate},
		"cgroup":       {"/run/glia/cgroupv2", corev1.HostPathDirectoryOrCreate},
		"glia-run":     {"/var/run/glia", corev1.HostPathDirectoryOrCreate},
		"glia-state":   {"/var/lib/glia", corev1.HostPathDirectoryOrCreate},
		"cni-path":     {"/opt/cni/bin", corev1.HostPathDirectoryOrCreate},
		"etc-cni-netd": {"/etc/cni/net.d", corev1.HostPathDirectoryOrCreate},
		"lib-modules":  {"/lib/modules", ""},
		"xtables-lock": {"/run/xtables.lock", corev1.HostPathFileOrCreate},
	}
	gotVolumes := map[string]hostPathWant{}
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			t.Errorf("volume %s is not a hostPath", v.Name)
			continue
		}
		w := hostPathWant{Path: v.HostPath.Path}
		if v.HostPath.Type != nil {
			w.Type = *v.HostPath.Type
		}
		gotVolumes[v.Name] = w
	}
	if diff := cmp.Diff(wantVolumes, gotVolumes); diff != "" {
		t.Errorf("volumes (-want +got):\n%s", diff)
	}

	// Init containers, in order, and the agent: commands and mounts.
	bpf := mountWant{"bpf-maps", "/sys/fs/bpf", corev1.MountPropagationBidirectional, false}
	cgroup := mountWant{"cgroup", "/run/glia/cgroupv2", corev1.MountPropagationBidirectional, false}
	cniBin := mountWant{"cni-path", "/host/opt/cni/bin", "", false}
	cniConf := mountWant{"etc-cni-netd", "/host/etc/cni/net.d", "", false}
	type containerWant struct {
		Name    string
		Command []string
		Args    []string
		Mounts  []mountWant
	}
	wantInit := []containerWant{
		{"mount-bpffs", []string{"glia-agent"}, []string{"init", "mount-bpffs", "--path", "/sys/fs/bpf"}, []mountWant{bpf}},
		{"mount-cgroup2", []string{"glia-agent"}, []string{"init", "mount-cgroup2", "--path", "/run/glia/cgroupv2"}, []mountWant{cgroup}},
		{"install-cni", []string{"glia-agent"}, []string{"init", "install-cni", "--bin-src", "/usr/bin/glia-cni",
			"--bin-dir", "/host/opt/cni/bin", "--conf-dir", "/host/etc/cni/net.d", "--socket", "/var/run/glia/glia.sock"},
			[]mountWant{cniBin, cniConf}},
	}
	wantAgent := containerWant{"glia-agent", []string{"glia-agent"}, []string{
		"--node-name=$(NODE_NAME)", "--namespace=$(POD_NAMESPACE)", "--state-dir=/var/lib/glia",
		"--socket=/var/run/glia/glia.sock", "--bpffs-dir=/sys/fs/bpf/glia", "--device=eth0", "--log-format=text",
		"--socket-lb-cgroup=/run/glia/cgroupv2", "--cni-conf-dir=/host/etc/cni/net.d",
		"--cni-bin-dir=/host/opt/cni/bin", "--daemonset-name=glia", "--health-probe-bind-address=127.0.0.1:9879",
	}, []mountWant{
		bpf, cgroup,
		{"glia-run", "/var/run/glia", "", false},
		{"glia-state", "/var/lib/glia", corev1.MountPropagationBidirectional, false},
		cniBin, cniConf,
		{"lib-modules", "/lib/modules", "", true},
		{"xtables-lock", "/run/xtables.lock", "", false},
	}}
	got := func(c corev1.Container) containerWant {
		return containerWant{c.Name, c.Command, c.Args, mountsOf(c)}
	}
	var gotInit []containerWant
	for _, c := range spec.InitContainers {
		gotInit = append(gotInit, got(c))
	}
	if diff := cmp.Diff(wantInit, gotInit); diff != "" {
		t.Errorf("init containers (-want +got):\n%s", diff)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want the agent alone", len(spec.Containers))
	}
	agent := spec.Containers[0]
	if diff := cmp.Diff(wantAgent, got(agent)); diff != "" {
		t.Errorf("agent container (-want +got):\n%s", diff)
	}
	for _, c := range append(spec.InitContainers, agent) {
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("container %s is not privileged", c.Name)
		}
		if c.Image != "glia:0.1.0" {
			t.Errorf("container %s runs image %q, want glia:0.1.0 (repository glia, tag appVersion)", c.Name, c.Image)
		}
	}

	// Env: the downward API, and no API server override by default.
	wantEnv := []corev1.EnvVar{
		{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
	}
	if diff := cmp.Diff(wantEnv, agent.Env); diff != "" {
		t.Errorf("agent env (-want +got):\n%s", diff)
	}

	// Probes on the agent's health endpoint.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", agent.StartupProbe, "/healthz"},
		{"livenessProbe", agent.LivenessProbe, "/healthz"},
		{"readinessProbe", agent.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s", p.name)
			continue
		}
		want := corev1.HTTPGetAction{Host: "127.0.0.1", Path: p.path, Port: intstr.FromInt32(9879)}
		if diff := cmp.Diff(want, *p.probe.HTTPGet); diff != "" {
			t.Errorf("%s (-want +got):\n%s", p.name, diff)
		}
	}
	if s := agent.StartupProbe; s != nil && int(s.FailureThreshold)*int(max(s.PeriodSeconds, 1)) < 120 {
		t.Errorf("startupProbe gives the agent %d s to start, want at least 120", s.FailureThreshold*s.PeriodSeconds)
	}
}

// TestDaemonSetAPIServer: k8sServiceHost/Port become the agent's
// KUBERNETES_SERVICE_HOST/PORT (the lab sets 198.18.0.1 / 6443).
func TestDaemonSetAPIServer(t *testing.T) {
	for _, port := range []string{"--set=k8sServicePort=6443", "--set-string=k8sServicePort=6443"} {
		agent := render(t, "--set", "k8sServiceHost=198.18.0.1", port).agent(t)
		env := map[string]string{}
		for _, e := range agent.Env {
			env[e.Name] = e.Value
		}
		if env["KUBERNETES_SERVICE_HOST"] != "198.18.0.1" || env["KUBERNETES_SERVICE_PORT"] != "6443" {
			t.Errorf("%s: agent env %v, want KUBERNETES_SERVICE_HOST=198.18.0.1 KUBERNETES_SERVICE_PORT=6443", port, agent.Env)
		}
	}
}
