package config

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	cmSrc   = Source{Kind: SourceConfigMap, Name: "glia-system/glia-config"}
	defSrc  = Source{Kind: SourceDefault}
	ebpfSel = metav1.LabelSelector{MatchLabels: map[string]string{"io.glia.enable-ebpf": "true"}}
)

func nc(name string, sel metav1.LabelSelector, defaults map[string]string) NodeConfig {
	return NodeConfig{Namespace: "glia-system", Name: name, Selector: sel, Defaults: defaults}
}

func ncSrc(name string) Source { return Source{Kind: SourceNodeConfig, Name: "glia-system/" + name} }

func TestResolvePrecedence(t *testing.T) {
	tests := []struct {
		name     string
		in       Inputs
		key      string
		want     Value
		warnings []Warning
	}{
		{
			name: "default",
			in:   Inputs{},
			key:  KeyBPFMasquerade,
			want: Value{Raw: "false", Source: defSrc},
		},
		{
			name: "flag over default",
			in:   Inputs{Flags: map[string]string{"--mtu": "1400"}},
			key:  KeyMTU,
			want: Value{Raw: "1400", Source: Source{Kind: SourceFlag, Name: "--mtu"}},
		},
		{
			name: "configmap over flag",
			in: Inputs{
				Flags:         map[string]string{"mtu": "1400"},
				ConfigMap:     map[string]string{"mtu": "1450"},
				ConfigMapName: "glia-system/glia-config",
			},
			key: KeyMTU,
			want: Value{Raw: "1450", Source: cmSrc,
				Overridden: []Source{{Kind: SourceFlag, Name: "--mtu"}}},
		},
		{
			name: "story: node config over configmap on a labelled node",
			in: Inputs{
				ConfigMap:     map[string]string{KeyBPFMasquerade: "false", KeyKubeProxyReplacement: "true"},
				ConfigMapName: "glia-system/glia-config",
				NodeConfigs: []NodeConfig{nc("glia-switch-from-iptables-ebpf", ebpfSel,
					map[string]string{KeyBPFMasquerade: "true"})},
				NodeLabels: map[string]string{"io.glia.enable-ebpf": "true", "kubernetes.io/hostname": "sandbox-05"},
			},
			key: KeyBPFMasquerade,
			want: Value{Raw: "true", Source: ncSrc("glia-switch-from-iptables-ebpf"),
				Overridden: []Source{cmSrc}},
		},
		{
			name: "node config not selecting the node is ignored",
			in: Inputs{
				ConfigMap:     map[string]string{KeyBPFMasquerade: "false"},
				ConfigMapName: "glia-system/glia-config",
				NodeConfigs: []NodeConfig{nc("glia-switch-from-iptables-ebpf", ebpfSel,
					map[string]string{KeyBPFMasquerade: "true"})},
				NodeLabels: map[string]string{"kubernetes.io/hostname": "sandbox-04"},
			},
			key:  KeyBPFMasquerade,
			want: Value{Raw: "false", Source: cmSrc},
		},
		{
			name: "later node config by name wins, with a warning naming both",
			in: Inputs{
				// Deliberately out of order: Resolve sorts by name.
				NodeConfigs: []NodeConfig{
					nc("b-legacy", metav1.LabelSelector{}, map[string]string{KeyBPFMasquerade: "false"}),
					nc("a-ebpf", ebpfSel, map[string]string{KeyBPFMasquerade: "true"}),
				},
				NodeLabels: map[string]string{"io.glia.enable-ebpf": "true"},
			},
			key:  KeyBPFMasquerade,
			want: Value{Raw: "false", Source: ncSrc("b-legacy"), Overridden: []Source{ncSrc("a-ebpf")}},
			warnings: []Warning{{
				Key: KeyBPFMasquerade,
				Message: `enable-bpf-masquerade is set by GliaNodeConfig glia-system/a-ebpf ("true") and ` +
					`GliaNodeConfig glia-system/b-legacy ("false"), which all select this node; glia-system/b-legacy wins (later by name)`,
			}},
		},
		{
			name: "matchExpressions In selects",
			in: Inputs{
				NodeConfigs: []NodeConfig{nc("zone", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}},
				}}, map[string]string{KeyLBAlgorithm: "maglev"})},
				NodeLabels: map[string]string{"zone": "b"},
			},
			key:  KeyLBAlgorithm,
			want: Value{Raw: "maglev", Source: ncSrc("zone")},
		},
		{
			name: "matchExpressions DoesNotExist excludes a labelled node",
			in: Inputs{
				NodeConfigs: []NodeConfig{nc("no-zone", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "zone", Operator: metav1.LabelSelectorOpDoesNotExist},
				}}, map[string]string{KeyLBAlgorithm: "maglev"})},
				NodeLabels: map[string]string{"zone": "b"},
			},
			key:  KeyLBAlgorithm,
			want: Value{Raw: "random", Source: defSrc},
		},
		{
			name: "values are canonicalised",
			in:   Inputs{ConfigMap: map[string]string{KeyMTU: " 01400 ", KeyBPFMasquerade: " true"}},
			key:  KeyMTU,
			want: Value{Raw: "1400", Source: Source{Kind: SourceConfigMap, Name: "glia-config"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, warnings, err := Resolve(tt.in)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			got, ok := c.Get(tt.key)
			if !ok {
				t.Fatalf("key %s missing", tt.key)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("value of %s (-want +got):\n%s", tt.key, diff)
			}
			if diff := cmp.Diff(tt.warnings, warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name string
		in   Inputs
		// want lists substrings that must all appear in the error.
		want []string
	}{
		{
			name: "unknown key suggests the closest",
			in: Inputs{NodeConfigs: []NodeConfig{nc("foo", metav1.LabelSelector{},
				map[string]string{"enable-bpf-masqurade": "true"})}},
			want: []string{`unknown config key "enable-bpf-masqurade" in GliaNodeConfig glia-system/foo (did you mean "enable-bpf-masquerade"?): known keys are auto-direct-node-routes, bpf-ct-map-max,`},
		},
		{
			name: "unknown key far from all gets no suggestion",
			in:   Inputs{ConfigMap: map[string]string{"hubble-relay": "true"}},
			want: []string{`unknown config key "hubble-relay" in ConfigMap glia-config: known keys are `},
		},
		{
			name: "bad boolean",
			in: Inputs{NodeConfigs: []NodeConfig{nc("foo", metav1.LabelSelector{},
				map[string]string{KeyBPFMasquerade: "maybe"})}},
			want: []string{`enable-bpf-masquerade: "maybe" (from GliaNodeConfig glia-system/foo) is not a boolean: use "true" or "false"`},
		},
		{
			name: "cilium's old kube-proxy-replacement spelling gets a hint",
			in:   Inputs{ConfigMap: map[string]string{KeyKubeProxyReplacement: "strict"}},
			want: []string{`kube-proxy-replacement: "strict" (from ConfigMap glia-config) is not a boolean: use "true" or "false" ("strict" is Cilium's pre-1.14 spelling of "true")`},
		},
		{
			name: "enum",
			in:   Inputs{Flags: map[string]string{KeyRoutingMode: "geneve"}},
			want: []string{`routing-mode: "geneve" (from flag --routing-mode) is not allowed: use "native" or "tunnel"`},
		},
		{
			name: "int range",
			in:   Inputs{ConfigMap: map[string]string{KeyLBMapMax: "0"}},
			want: []string{`bpf-lb-map-max: "0" (from ConfigMap glia-config) is out of range: use an integer from 1 to 1048576`},
		},
		{
			name: "cidr with host bits",
			in:   Inputs{ConfigMap: map[string]string{KeyClusterCIDR: "198.19.1.1/16"}},
			want: []string{`cluster-pool-ipv4-cidr: "198.19.1.1/16" (from ConfigMap glia-config) has host bits set: use "198.19.0.0/16"`},
		},
		{
			name: "overlapping ranges",
			in:   Inputs{ConfigMap: map[string]string{KeyServiceCIDR: "198.19.128.0/17"}},
			want: []string{`cluster-pool-ipv4-cidr 198.19.0.0/16 (from default) overlaps service-cidr 198.19.128.0/17 (from ConfigMap glia-config)`},
		},
		{
			name: "invalid selector names the node config",
			in: Inputs{NodeConfigs: []NodeConfig{nc("broken", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "zone", Operator: "Near", Values: []string{"a"}},
			}}, map[string]string{})}},
			want: []string{`GliaNodeConfig glia-system/broken: invalid spec.nodeSelector: `, `"Near"`},
		},
		{
			name: "every problem at once",
			in: Inputs{
				Flags:     map[string]string{KeyMTU: "9"},
				ConfigMap: map[string]string{KeyDebug: "yes", "tunnel-protocl": "vxlan"},
				NodeConfigs: []NodeConfig{nc("foo", metav1.LabelSelector{},
					map[string]string{KeyHostLegacyRouting: "auto"})},
			},
			want: []string{
				`mtu: "9" (from flag --mtu) is out of range: use 0 (derive from the node's device) or 576..65535`,
				`debug: "yes" (from ConfigMap glia-config) is not a boolean`,
				`unknown config key "tunnel-protocl" in ConfigMap glia-config (did you mean "tunnel-protocol"?)`,
				`enable-host-legacy-routing: "auto" (from GliaNodeConfig glia-system/foo) is not a boolean: use "true", "false" or "" (unset)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Resolve(tt.in)
			if err == nil {
				t.Fatalf("Resolve succeeded, want an error containing %q", tt.want)
			}
			if c != nil {
				t.Errorf("Resolve returned a config with an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
		})
	}
}

func TestTypedDefaults(t *testing.T) {
	got := Defaults().Typed()
	want := Resolved{
		RoutingMode:          "native",
		AutoDirectNodeRoutes: true,
		TunnelProtocol:       "vxlan",
		IPv4Masquerade:       true,
		LBAlgorithm:          "random",
		LBMapMax:             65536,
		CTMapMax:             131072,
		NATMapMax:            131072,
		ClusterCIDR:          netip.MustParsePrefix("198.19.0.0/16"),
		ServiceCIDR:          netip.MustParsePrefix("198.18.128.0/17"),
		HealthPort:           4240,
		PrometheusServeAddr:  ":9962",
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
		cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Sources" }, cmp.Ignore())); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if len(got.Sources) != len(Keys()) {
		t.Errorf("Sources has %d keys, want %d", len(got.Sources), len(Keys()))
	}
}

func TestTypedOptionalBool(t *testing.T) {
	for _, raw := range []string{"", "true", "false"} {
		c, _, err := Resolve(Inputs{ConfigMap: map[string]string{KeyHostLegacyRouting: raw}})
		if err != nil {
			t.Fatal(err)
		}
		got := c.Typed().HostLegacyRouting
		var gotS string
		if got != nil {
			gotS = map[bool]string{true: "true", false: "false"}[*got]
		}
		if gotS != raw {
			t.Errorf("enable-host-legacy-routing %q resolved to %v", raw, gotS)
		}
	}
}

func TestEveryKeyIsDescribed(t *testing.T) {
	for _, k := range Keys() {
		if k.Help == "" || k.Allowed == "" || k.DisruptionNote == "" || !k.RequiresRestart {
			t.Errorf("key %s: help %q, allowed %q, note %q, restart %v", k.Name, k.Help, k.Allowed, k.DisruptionNote, k.RequiresRestart)
		}
		if _, err := k.check(k.Default); err != nil {
			t.Errorf("key %s: default %q does not validate: %v", k.Name, k.Default, err)
		}
	}
}

func TestMatchingAndUnmatchedNodeConfigs(t *testing.T) {
	configs := []NodeConfig{
		nc("z-ebpf", ebpfSel, nil),
		nc("all", metav1.LabelSelector{}, nil),
		nc("gpu", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "gpu", Operator: metav1.LabelSelectorOpExists},
		}}, nil),
		nc("not-zone-a", metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "zone", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"a"}},
		}}, nil),
	}
	nodes := []map[string]string{
		{"zone": "a", "io.glia.enable-ebpf": "true"},
		{"zone": "a"},
	}
	names := func(ncs []NodeConfig) []string {
		var out []string
		for _, n := range ncs {
			out = append(out, n.FullName())
		}
		return out
	}
	m, err := MatchingNodeConfigs(configs, nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"glia-system/all", "glia-system/z-ebpf"}, names(m)); diff != "" {
		t.Errorf("matching node 0 (-want +got):\n%s", diff)
	}
	m, err = MatchingNodeConfigs(configs, map[string]string{"zone": "b", "gpu": ""})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"glia-system/all", "glia-system/gpu", "glia-system/not-zone-a"}, names(m)); diff != "" {
		t.Errorf("matching zone b gpu node (-want +got):\n%s", diff)
	}
	un, err := UnmatchedNodeConfigs(configs, nodes)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"glia-system/gpu", "glia-system/not-zone-a"}, un); diff != "" {
		t.Errorf("unmatched (-want +got):\n%s", diff)
	}
}

func TestTable(t *testing.T) {
	c, _, err := Resolve(Inputs{
		Flags:     map[string]string{KeyDebug: "true"},
		ConfigMap: map[string]string{KeyDebug: "false", KeyKubeProxyReplacement: "true"},
	})
	if err != nil {
		t.Fatal(err)
	}
	rows := c.Table()
	if len(rows) != len(Keys()) {
		t.Fatalf("%d rows, want %d", len(rows), len(Keys()))
	}
	byKey := map[string]Row{}
	for i, r := range rows {
		if i > 0 && rows[i-1].Key >= r.Key {
			t.Errorf("rows not sorted: %s before %s", rows[i-1].Key, r.Key)
		}
		byKey[r.Key] = r
	}
	cm := Source{Kind: SourceConfigMap, Name: "glia-config"}
	want := map[string]Row{
		KeyDebug:                {Key: KeyDebug, Value: "false", Source: cm, Overridden: []Source{{Kind: SourceFlag, Name: "--debug"}}},
		KeyKubeProxyReplacement: {Key: KeyKubeProxyReplacement, Value: "true", Source: cm},
		KeyRoutingMode:          {Key: KeyRoutingMode, Value: "native", Source: defSrc},
	}
	for k, w := range want {
		if diff := cmp.Diff(w, byKey[k]); diff != "" {
			t.Errorf("row %s (-want +got):\n%s", k, diff)
		}
	}
}
