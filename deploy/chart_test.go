package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/config"
)

func TestHelmLint(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"default values", nil},
		{"story values", []string{"-f", storyValues}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runHelm(t, append([]string{"lint", "--strict", chartPath, "--namespace", testNamespace}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Fatalf("helm lint:\n%s", out)
			}
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "[WARNING]") || strings.Contains(l, "[ERROR]") {
					t.Errorf("helm lint: %s", l)
				}
			}
		})
	}
}

// TestDefaultConfigMap: the default values render exactly these keys, every
// one accepted by internal/config and equal to the agent's built-in default:
// installing the chart as it comes changes no default.
func TestDefaultConfigMap(t *testing.T) {
	data := render(t).config(t)
	want := map[string]string{
		"auto-direct-node-routes": "true",
		"bpf-ct-map-max":          "131072",
		"bpf-lb-algorithm":        "random",
		"bpf-lb-map-max":          "65536",
		"bpf-nat-map-max":         "131072",
		"cluster-pool-ipv4-cidr":  "198.19.0.0/16",
		"debug":                   "false",
		"enable-bpf-masquerade":   "false",
		"enable-ipv4-masquerade":  "true",
		"health-port":             "4240",
		"kube-proxy-replacement":  "false",
		"mtu":                     "0",
		"prometheus-serve-addr":   ":9962",
		"routing-mode":            "native",
		"tunnel-protocol":         "vxlan",
	}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Fatalf("ConfigMap glia-config data (-want +got):\n%s", diff)
	}
	c, _, err := config.Resolve(config.Inputs{ConfigMap: data})
	if err != nil {
		t.Fatalf("internal/config refuses the rendered ConfigMap: %v", err)
	}
	for k, v := range data {
		key, _ := config.LookupKey(k)
		if c.String(k) != v {
			t.Errorf("%s: rendered %q, which internal/config reads as %q: render the canonical form", k, v, c.String(k))
		}
		if v != key.Default {
			t.Errorf("%s: the chart's default %q differs from the agent's built-in default %q", k, v, key.Default)
		}
	}
}

// TestStoryValues: the story's values file, and the story's two values in
// every spelling Cilium's chart took.
func TestStoryValues(t *testing.T) {
	data := render(t, "-f", storyValues).config(t)
	if data["kube-proxy-replacement"] != "true" || data["enable-bpf-masquerade"] != "true" {
		t.Fatalf("story values render kube-proxy-replacement=%q enable-bpf-masquerade=%q, want both \"true\"",
			data["kube-proxy-replacement"], data["enable-bpf-masquerade"])
	}
	if _, _, err := config.Resolve(config.Inputs{ConfigMap: data}); err != nil {
		t.Fatalf("internal/config refuses the story's ConfigMap: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "kubeProxyReplacement=true"}, "true"},
		{[]string{"--set", "kubeProxyReplacement=false"}, "false"},
		{[]string{"--set", "kubeProxyReplacement=strict"}, "true"},
		{[]string{"--set", "kubeProxyReplacement=disabled"}, "false"},
		{[]string{"--set-string", "kubeProxyReplacement=true"}, "true"},
		{[]string{"--set-string", "kubeProxyReplacement=false"}, "false"},
	} {
		if got := render(t, tc.args...).config(t)["kube-proxy-replacement"]; got != tc.want {
			t.Errorf("%v: kube-proxy-replacement %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestBadValues: every wrong value fails helm template, helm install and
// helm lint (all three validate against values.schema.json or run the
// templates), with a message naming the value.
func TestBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown top-level", []string{"--set", "kubeProxyReplacment=true"}, []string{"'kubeProxyReplacment' not allowed"}},
		{"unknown nested", []string{"--set", "bpf.masqerade=true"}, []string{"at '/bpf'", "'masqerade' not allowed"}},
		{"unknown deep", []string{"--set", "updateStrategy.rollingUpdate.maxSurge=1"}, []string{"at '/updateStrategy/rollingUpdate'", "'maxSurge' not allowed"}},
		{"unknown ipam value (no such key in glia)", []string{"--set", "ipam.operator.clusterPoolIPv4MaskSize=24"}, []string{"at '/ipam/operator'", "'clusterPoolIPv4MaskSize' not allowed"}},
		{"unknown extraConfig key", []string{"--set", "extraConfig.enable-bpf-masq=true"}, []string{"at '/extraConfig'", "'enable-bpf-masq' not allowed"}},
		{"wrong type bool", []string{"--set", "bpf.masquerade=yes"}, []string{"at '/bpf/masquerade'", "want boolean"}},
		{"wrong type int", []string{"--set", "bpf.lbMapMax=lots"}, []string{"at '/bpf/lbMapMax'", "want integer"}},
		{"wrong type list", []string{"--set", "ipam.operator.clusterPoolIPv4PodCIDRList=10.0.0.0/8"}, []string{"at '/ipam/operator/clusterPoolIPv4PodCIDRList'", "want array"}},
		{"bad enum", []string{"--set", "routingMode=vxlan"}, []string{"at '/routingMode'", "'native', 'tunnel'"}},
		{"bad enum nested", []string{"--set", "loadBalancer.algorithm=roundrobin"}, []string{"at '/loadBalancer/algorithm'", "'random', 'maglev'"}},
		{"Cilium mode glia has not", []string{"--set", "kubeProxyReplacement=partial"}, []string{"at '/kubeProxyReplacement'", "'strict', 'disabled'"}},
		{"bad extraConfig value", []string{"--set", "extraConfig.routing-mode=vxlan"}, []string{"at '/extraConfig/routing-mode'"}},
		{"out of range", []string{"--set", "bpf.ctMapMax=5"}, []string{"at '/bpf/ctMapMax'", "want 1,024"}},
		{"out of range high", []string{"--set", "bpf.lbMapMax=2000000"}, []string{"at '/bpf/lbMapMax': maximum"}},
		{"port out of range", []string{"--set", "prometheus.port=70000"}, []string{"at '/prometheus/port'", "want 65,535"}},
		{"MTU in neither range", []string{"--set", "MTU=100"}, []string{"at '/MTU'", "want 576"}},
		{"two CIDRs", []string{"--set", "ipam.operator.clusterPoolIPv4PodCIDRList={10.0.0.0/8,10.1.0.0/16}"}, []string{"at '/ipam/operator/clusterPoolIPv4PodCIDRList'", "maxItems"}},
		{"not a CIDR", []string{"--set", "ipam.operator.clusterPoolIPv4PodCIDRList={10.0.0.300/8}"}, []string{"at '/ipam/operator/clusterPoolIPv4PodCIDRList/0'", "does not match pattern"}},
		{"value removed", []string{"--set", "bpf=null"}, []string{"missing property 'bpf'"}},
		{"maxUnavailable 0", []string{"--set", "updateStrategy.rollingUpdate.maxUnavailable=0"}, []string{"at '/updateStrategy/rollingUpdate/maxUnavailable'"}},
		{"unknown log format", []string{"--set", "logFormat=logfmt"}, []string{"at '/logFormat'", "'text', 'json'"}},
		{"two devices", []string{"--set", "devices={eth0,eth1}"}, []string{"at '/devices'"}},
		{"host without port", []string{"--set", "k8sServiceHost=198.18.0.1"}, []string{"at '/k8sServicePort'"}},
		{"port without host", []string{"--set", "k8sServicePort=6443"}, []string{"at '/k8sServiceHost'"}},
		{"bad toleration", []string{"--set", "tolerations[0].operator=Maybe"}, []string{"at '/tolerations/0/operator'"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range [][]string{
				{"template", testRelease, chartPath},
				{"install", testRelease, chartPath, "--dry-run=client"},
				{"lint", chartPath},
			} {
				args := append(append(cmd, "--namespace", testNamespace), tc.args...)
				out, err := runHelm(t, args...)
				if err == nil {
					t.Fatalf("helm %s succeeded:\n%s", cmd[0], out)
				}
				msg := err.Error() + out // lint reports on stdout
				for _, w := range tc.want {
					if !strings.Contains(msg, w) {
						t.Errorf("helm %s %v: message does not contain %q:\n%s", cmd[0], tc.args, w, msg)
					}
				}
			}
		})
	}
}

// TestWriteChart: the embedded chart is the whole chart: written out, it
// renders exactly what the repository's chart renders.
func TestWriteChart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "glia")
	if err := WriteChart(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"Chart.yaml", "values.yaml", "values.schema.json", ".helmignore",
		"templates/_helpers.tpl", "templates/daemonset.yaml", "crds/glia.dev_glianodeconfigs.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("written chart lacks %s: %v", f, err)
		}
	}
	want, err := runHelm(t, "template", testRelease, chartPath, "--namespace", testNamespace, "--include-crds", "-f", storyValues)
	if err != nil {
		t.Fatal(err)
	}
	got, err := runHelm(t, "template", testRelease, dir, "--namespace", testNamespace, "--include-crds", "-f", storyValues)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("written chart renders differently (-repository +written):\n%s", diff)
	}
	if err := WriteChart(dir); err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Fatalf("WriteChart into a non-empty dir: err %v, want a refusal", err)
	}
}

func TestCRDManifests(t *testing.T) {
	crds, err := CRDManifests()
	if err != nil {
		t.Fatal(err)
	}
	if len(crds) != 1 || !strings.Contains(string(crds[0]), "name: glianodeconfigs.glia.dev") {
		t.Fatalf("CRDManifests: %d manifests, want the GliaNodeConfig CRD", len(crds))
	}
}
