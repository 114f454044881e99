package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"glia.dev/glia/internal/config"
)

// sampleValues holds a valid value, different from the default, for every
// config key. A new key without one fails TestValueMappings.
var sampleValues = map[string]string{
	config.KeyAutoDirectNodeRoutes: "false",
	config.KeyCTMapMax:             "262144",
	config.KeyLBAlgorithm:          "maglev",
	config.KeyLBMapMax:             "1024",
	config.KeyNATMapMax:            "4096",
	config.KeyClusterCIDR:          "10.0.0.0/16",
	config.KeyDebug:                "true",
	config.KeyBPFMasquerade:        "true",
	config.KeyHostLegacyRouting:    "true",
	config.KeyIPv4Masquerade:       "false",
	config.KeyHealthPort:           "4241",
	config.KeyKubeProxyReplacement: "true",
	config.KeyMTU:                  "1450",
	config.KeyPrometheusServeAddr:  "127.0.0.1:9963",
	config.KeyRoutingMode:          "tunnel",
	config.KeyServiceCIDR:          "10.96.0.0/12",
	config.KeyTunnelProtocol:       "vxlan", // the only protocol: its default
}

func TestValueForKey(t *testing.T) {
	for key, want := range map[string]string{
		"kube-proxy-replacement":     "kubeProxyReplacement",
		"enable-bpf-masquerade":      "bpf.masquerade",
		"enable-host-legacy-routing": "bpf.hostLegacyRouting",
		"cluster-pool-ipv4-cidr":     "ipam.operator.clusterPoolIPv4PodCIDRList",
		"bpf-nat-map-max":            "bpf.natMax",
		"health-port":                "clusterHealthPort",
		"mtu":                        "MTU",
		"service-cidr":               "extraConfig.service-cidr",
		"prometheus-serve-addr":      "extraConfig.prometheus-serve-addr",
		"no-such-key":                "",
	} {
		if got := ValueForKey(key); got != want {
			t.Errorf("ValueForKey(%q) = %q, want %q", key, got, want)
		}
	}
	var keys []string
	for _, m := range ValueMappings() {
		keys = append(keys, m.Key)
	}
	var want []string
	for _, k := range config.Keys() {
		want = append(want, k.Name)
	}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Fatalf("ValueMappings keys (-config keys +mapped):\n%s", diff)
	}
}

// TestValueMappings sets every config key through SetArgs with real helm
// and checks that exactly that key of ConfigMap glia-config changes.
func TestValueMappings(t *testing.T) {
	defaults := render(t).config(t)
	for _, m := range ValueMappings() {
		t.Run(m.Key, func(t *testing.T) {
			sample, ok := sampleValues[m.Key]
			if !ok {
				t.Fatalf("no sample value for key %s: add one to sampleValues", m.Key)
			}
			args, err := SetArgs(map[string]string{m.Key: " " + sample + " "}) // canonicalised on the way
			if err != nil {
				t.Fatal(err)
			}
			if len(args) != 2 || args[0] != "--set-json" || !strings.HasPrefix(args[1], m.Value+"=") {
				t.Fatalf("SetArgs = %q, want --set-json %s=...", args, m.Value)
			}
			want := maps(defaults)
			want[m.Key] = sample
			if diff := cmp.Diff(want, render(t, args...).config(t)); diff != "" {
				t.Errorf("helm %s: ConfigMap glia-config (-want +got):\n%s", strings.Join(args, " "), diff)
			}
		})
	}
	t.Run("all at once", func(t *testing.T) {
		args, err := SetArgs(sampleValues)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(sampleValues, render(t, args...).config(t)); diff != "" {
			t.Errorf("ConfigMap glia-config (-want +got):\n%s", diff)
		}
	})
	t.Run("unset host routing", func(t *testing.T) {
		for _, v := range []string{"", "false"} {
			args, err := SetArgs(map[string]string{config.KeyHostLegacyRouting: v})
			if err != nil {
				t.Fatal(err)
			}
			got, ok := render(t, args...).config(t)[config.KeyHostLegacyRouting]
			if (v == "" && ok) || (v != "" && got != v) {
				t.Errorf("%s=%q renders %q (present %v)", config.KeyHostLegacyRouting, v, got, ok)
			}
		}
	})
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestSetArgsErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  map[string]string
		want string
	}{
		{map[string]string{"enable-bpf-masqurade": "true"}, `unknown config key "enable-bpf-masqurade" in ConfigMap glia-config (did you mean "enable-bpf-masquerade"?)`},
		{map[string]string{"kube-proxy-replacement": "strict"}, `"strict" is Cilium's pre-1.14 spelling of "true"`},
		{map[string]string{"bpf-lb-map-max": "0"}, "bpf-lb-map-max: \"0\" (from ConfigMap glia-config) is out of range"},
		{map[string]string{"service-cidr": "198.19.0.0/17"}, "overlaps"},
	} {
		args, err := SetArgs(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetArgs(%v) = %q, %v; want an error containing %q", tc.cfg, args, err, tc.want)
		}
	}
}

// valueConsumers are the values that render no config key: each is set to a
// new value and its check finds it in the rendered objects.
var valueConsumers = map[string]struct {
	args  []string
	check func(m *manifests) error
}{
	"image.repository": {[]string{"--set", "image.repository=registry.example/glia"}, imageIs("registry.example/glia:0.1.0")},
	"image.tag":        {[]string{"--set", "image.tag=0.2.0"}, imageIs("glia:0.2.0")},
	"image.pullPolicy": {[]string{"--set", "image.pullPolicy=Always"}, func(m *manifests) error {
		return eachContainer(m, func(c string, img string, pp string) error {
			if pp != "Always" {
				return fmt.Errorf("container %s pullPolicy %q", c, pp)
			}
			return nil
		})
	}},
	"healthPort": {[]string{"--set", "healthPort=9880"}, func(m *manifests) error {
		a := m.DaemonSets["glia"].Spec.Template.Spec.Containers[0]
		if !slices.Contains(a.Args, "--health-probe-bind-address=127.0.0.1:9880") {
			return fmt.Errorf("agent args %q", a.Args)
		}
		if a.LivenessProbe.HTTPGet.Port.IntVal != 9880 || a.ReadinessProbe.HTTPGet.Port.IntVal != 9880 || a.StartupProbe.HTTPGet.Port.IntVal != 9880 {
			return fmt.Errorf("probes not on 9880")
		}
		return nil
	}},
	"prometheus.enabled": {[]string{"--set", "prometheus.enabled=false"}, configIs(config.KeyPrometheusServeAddr, "")},
	"prometheus.port":    {[]string{"--set", "prometheus.port=9000"}, configIs(config.KeyPrometheusServeAddr, ":9000")},
	"devices": {[]string{"--set", "devices=ens18"}, func(m *manifests) error {
		if a := m.DaemonSets["glia"].Spec.Template.Spec.Containers[0].Args; !slices.Contains(a, "--device=ens18") {
			return fmt.Errorf("agent args %q", a)
		}
		return nil
	}},
	"logFormat": {[]string{"--set", "logFormat=json"}, func(m *manifests) error {
		if a := m.DaemonSets["glia"].Spec.Template.Spec.Containers[0].Args; !slices.Contains(a, "--log-format=json") {
			return fmt.Errorf("agent args %q", a)
		}
		return nil
	}},
	"k8sServiceHost": {[]string{"--set", "k8sServiceHost=198.18.0.1", "--set", "k8sServicePort=6443"}, envHas("KUBERNETES_SERVICE_HOST", "198.18.0.1")},
	"k8sServicePort": {[]string{"--set", "k8sServiceHost=198.18.0.1", "--set", "k8sServicePort=6443"}, envHas("KUBERNETES_SERVICE_PORT", "6443")},
	"extraConfig":    {[]string{"--set", "extraConfig.service-cidr=10.96.0.0/12"}, configIs(config.KeyServiceCIDR, "10.96.0.0/12")},
	"resources": {[]string{"--set", "resources.requests.cpu=100m", "--set", "resources.limits.memory=1Gi"}, func(m *manifests) error {
		r := m.DaemonSets["glia"].Spec.Template.Spec.Containers[0].Resources
		if r.Requests.Cpu().String() != "100m" || r.Limits.Memory().String() != "1Gi" {
			return fmt.Errorf("resources %v", r)
		}
		return nil
	}},
	"tolerations": {[]string{"--set", "tolerations[0].key=a", "--set", "tolerations[0].operator=Exists"}, func(m *manifests) error {
		if tl := m.DaemonSets["glia"].Spec.Template.Spec.Tolerations; len(tl) != 1 || tl[0].Key != "a" {
			return fmt.Errorf("tolerations %v", tl)
		}
		return nil
	}},
	"nodeSelector": {[]string{"--set", "nodeSelector.role=net"}, func(m *manifests) error {
		if ns := m.DaemonSets["glia"].Spec.Template.Spec.NodeSelector; ns["role"] != "net" {
			return fmt.Errorf("nodeSelector %v", ns)
		}
		return nil
	}},
	"updateStrategy.rollingUpdate.maxUnavailable": {[]string{"--set", "updateStrategy.rollingUpdate.maxUnavailable=10%"}, func(m *manifests) error {
		if mu := m.DaemonSets["glia"].Spec.UpdateStrategy.RollingUpdate.MaxUnavailable; mu == nil || mu.String() != "10%" {
			return fmt.Errorf("maxUnavailable %v", mu)
		}
		return nil
	}},
}

func imageIs(want string) func(m *manifests) error {
	return func(m *manifests) error {
		return eachContainer(m, func(c, img, _ string) error {
			if img != want {
				return fmt.Errorf("container %s image %q, want %q", c, img, want)
			}
			return nil
		})
	}
}

func eachContainer(m *manifests, f func(name, image, pullPolicy string) error) error {
	spec := m.DaemonSets["glia"].Spec.Template.Spec
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if err := f(c.Name, c.Image, string(c.ImagePullPolicy)); err != nil {
			return err
		}
	}
	return nil
}

func configIs(key, want string) func(m *manifests) error {
	return func(m *manifests) error {
		if got, ok := m.ConfigMaps["glia-config"].Data[key]; !ok || got != want {
			return fmt.Errorf("%s = %q (present %v), want %q", key, got, ok, want)
		}
		return nil
	}
}

func envHas(name, want string) func(m *manifests) error {
	return func(m *manifests) error {
		for _, e := range m.DaemonSets["glia"].Spec.Template.Spec.Containers[0].Env {
			if e.Name == name && e.Value == want {
				return nil
			}
		}
		return fmt.Errorf("agent env lacks %s=%s", name, want)
	}
}

// freeForm values are maps or lists whose entries the user names: each is
// one value.
var freeForm = []string{"extraConfig", "resources", "nodeSelector", "tolerations", "ipam.operator.clusterPoolIPv4PodCIDRList"}

// valueLeaves lists the values of values.yaml by dotted path.
func valueLeaves(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("chart/glia/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, x := range m {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			if sub, ok := x.(map[string]any); ok && len(sub) > 0 && !slices.Contains(freeForm, p) {
				walk(p, sub)
				continue
			}
			out = append(out, p)
		}
	}
	walk("", v)
	sort.Strings(out)
	return out
}

// TestEveryValueHasAConsumer: every value of values.yaml renders something —
// a config key (ValueMappings) or a field of the DaemonSet — and setting it
// changes what it should. A value nothing reads fails here.
func TestEveryValueHasAConsumer(t *testing.T) {
	mapped := map[string]string{}
	for _, m := range ValueMappings() {
		if !strings.HasPrefix(m.Value, "extraConfig.") {
			mapped[m.Value] = m.Key
		}
	}
	leaves := valueLeaves(t)
	for _, p := range leaves {
		t.Run(p, func(t *testing.T) {
			if key, ok := mapped[p]; ok {
				args, err := SetArgs(map[string]string{key: sampleValues[key]})
				if err != nil {
					t.Fatal(err)
				}
				if key == config.KeyTunnelProtocol {
					// vxlan is its only value: setting it must still render the key.
					args = []string{"--set", "tunnelProtocol=vxlan"}
				}
				if err := configIs(key, sampleValues[key])(render(t, args...)); err != nil {
					t.Fatalf("value %s renders no key %s: %v", p, key, err)
				}
				return
			}
			c, ok := valueConsumers[p]
			if !ok {
				t.Fatalf("value %s has no consumer: map it to a config key (ValueMappings) or give it a check in valueConsumers", p)
			}
			m := render(t, c.args...)
			if err := c.check(m); err != nil {
				t.Fatalf("value %s (%s): %v", p, strings.Join(c.args, " "), err)
			}
			if err := c.check(render(t)); err == nil {
				t.Fatalf("value %s: the check passes with the default values too: it proves nothing", p)
			}
		})
	}
	for p := range valueConsumers {
		if !slices.Contains(leaves, p) {
			t.Errorf("valueConsumers has %s, which values.yaml does not", p)
		}
	}
}

// TestSchemaMatchesKeys: the schema's types, enums and ranges are those of
// internal/config's keys, for the named values and for extraConfig.
func TestSchemaMatchesKeys(t *testing.T) {
	b, err := os.ReadFile("chart/glia/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	prop := func(path string) map[string]any {
		s := schema
		for _, part := range strings.Split(path, ".") {
			props, _ := s["properties"].(map[string]any)
			next, ok := props[part].(map[string]any)
			if !ok {
				t.Fatalf("schema has no property %s", path)
			}
			s = next
		}
		return s
	}
	extra := prop("extraConfig")
	var extraKeys []string
	for k := range extra["properties"].(map[string]any) {
		extraKeys = append(extraKeys, k)
	}
	sort.Strings(extraKeys)
	var keyNames []string
	for _, k := range config.Keys() {
		keyNames = append(keyNames, k.Name)
	}
	if diff := cmp.Diff(keyNames, extraKeys); diff != "" {
		t.Errorf("schema extraConfig keys (-config keys +schema):\n%s", diff)
	}
	if extra["additionalProperties"] != false {
		t.Error("extraConfig accepts unknown keys")
	}

	for _, m := range ValueMappings() {
		k, _ := config.LookupKey(m.Key)
		xs := prop("extraConfig." + m.Key)
		checkKeySchema(t, "extraConfig."+m.Key, k, xs, true)
		if !strings.HasPrefix(m.Value, "extraConfig.") {
			s := prop(m.Value)
			if m.Key == config.KeyClusterCIDR {
				s = s["items"].(map[string]any)
			}
			checkKeySchema(t, m.Value, k, s, false)
		}
	}
}

// checkKeySchema compares one value's schema with its key. raw: the
// extraConfig form (booleans and integers may also be strings).
func checkKeySchema(t *testing.T, path string, k config.Key, s map[string]any, raw bool) {
	t.Helper()
	alts := []map[string]any{s}
	for _, a := range asSlice(s["anyOf"]) {
		alts = append(alts, a.(map[string]any))
	}
	switch k.Type {
	case config.TypeBool, config.TypeOptionalBool:
		want := []any{true, false}
		if raw {
			want = append(want, "true", "false")
		}
		if k.Type == config.TypeOptionalBool && raw {
			want = append(want, "")
		}
		var got []any
		for _, a := range alts {
			if a["type"] == "boolean" || slices.Contains(asSlice(a["type"]), any("boolean")) {
				got = append(got, true, false)
			}
			got = append(got, asSlice(a["enum"])...)
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("%s (key %s, %s) does not accept %#v", path, k.Name, k.Type, w)
			}
		}
	case config.TypeEnum:
		var got []string
		for _, e := range asSlice(s["enum"]) {
			got = append(got, e.(string))
		}
		if diff := cmp.Diff(k.Enum, got); diff != "" {
			t.Errorf("%s enum (-key %s +schema):\n%s", path, k.Name, diff)
		}
	case config.TypeInt:
		var lo, hi float64
		zero := false
		for _, a := range alts {
			if v, ok := a["minimum"].(float64); ok {
				lo = v
			}
			if v, ok := a["maximum"].(float64); ok {
				hi = v
			}
			if v, ok := a["const"].(float64); ok && v == 0 {
				zero = true
			}
		}
		if int(lo) != k.Min || int(hi) != k.Max || zero != k.ZeroAllowed {
			t.Errorf("%s range [%v, %v] zero=%v, key %s has [%d, %d] zero=%v", path, lo, hi, zero, k.Name, k.Min, k.Max, k.ZeroAllowed)
		}
	case config.TypeCIDR:
		if s["pattern"] == nil {
			t.Errorf("%s (key %s, a CIDR) has no pattern", path, k.Name)
		}
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}
