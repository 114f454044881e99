package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func mustResolve(t *testing.T, in Inputs) *Config {
	t.Helper()
	c, _, err := Resolve(in)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return c
}

func TestDiff(t *testing.T) {
	cm := map[string]string{KeyKubeProxyReplacement: "true", KeyDebug: "false"}
	current := mustResolve(t, Inputs{ConfigMap: cm, ConfigMapName: "glia-system/glia-config"})
	tests := []struct {
		name string
		in   Inputs
		want []Change
	}{
		{
			name: "same values from another source are no change",
			in: Inputs{
				ConfigMap: cm, ConfigMapName: "glia-system/glia-config",
				NodeConfigs: []NodeConfig{nc("dup", metav1.LabelSelector{}, map[string]string{KeyDebug: "false"})},
			},
		},
		{
			name: "masquerade switch is disruptive",
			in: Inputs{
				ConfigMap: cm, ConfigMapName: "glia-system/glia-config",
				NodeConfigs: []NodeConfig{nc("glia-switch-from-iptables-ebpf", ebpfSel, map[string]string{KeyBPFMasquerade: "true"})},
				NodeLabels:  map[string]string{"io.glia.enable-ebpf": "true"},
			},
			want: []Change{{
				Key: KeyBPFMasquerade, From: "false", To: "true",
				FromSource: defSrc, ToSource: ncSrc("glia-switch-from-iptables-ebpf"),
				RequiresRestart: true, Disruptive: true, Note: keys[keyIndex[KeyBPFMasquerade]].DisruptionNote,
			}},
		},
		{
			name: "several keys, sorted, classified",
			in: Inputs{
				ConfigMap:     map[string]string{KeyKubeProxyReplacement: "false", KeyDebug: "true", KeyRoutingMode: "tunnel", KeyHostLegacyRouting: "true"},
				ConfigMapName: "glia-system/glia-config",
			},
			want: []Change{
				{Key: KeyDebug, From: "false", To: "true", FromSource: cmSrc, ToSource: cmSrc, RequiresRestart: true,
					Note: "only logging changes"},
				{Key: KeyHostLegacyRouting, From: "", To: "true", FromSource: defSrc, ToSource: cmSrc, RequiresRestart: true,
					Note: keys[keyIndex[KeyHostLegacyRouting]].DisruptionNote},
				{Key: KeyKubeProxyReplacement, From: "true", To: "false", FromSource: cmSrc, ToSource: cmSrc, RequiresRestart: true,
					Disruptive: true, Note: keys[keyIndex[KeyKubeProxyReplacement]].DisruptionNote},
				{Key: KeyRoutingMode, From: "native", To: "tunnel", FromSource: defSrc, ToSource: cmSrc, RequiresRestart: true,
					Disruptive: true, Note: keys[keyIndex[KeyRoutingMode]].DisruptionNote},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Diff(current, mustResolve(t, tt.in))
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDisruptionClassification(t *testing.T) {
	want := map[string]bool{
		KeyRoutingMode:          true,
		KeyKubeProxyReplacement: true,
		KeyBPFMasquerade:        true,
		KeyIPv4Masquerade:       true,
		KeyCTMapMax:             true,
		KeyNATMapMax:            true,
		KeyHostLegacyRouting:    false,
		KeyDebug:                false,
		KeyHealthPort:           false,
	}
	for k, w := range want {
		key, ok := LookupKey(k)
		if !ok {
			t.Fatalf("no key %s", k)
		}
		if key.Disruptive != w {
			t.Errorf("%s: Disruptive = %v, want %v", k, key.Disruptive, w)
		}
	}
}

func TestDiffModes(t *testing.T) {
	legacy := Modes{RoutingMode: "native", AutoDirectNodeRoutes: true, KubeProxyReplacement: true,
		Masquerading: MasqIPTables, HostRouting: HostRouting{Mode: HostRoutingLegacy}}
	bpf := Modes{RoutingMode: "tunnel", TunnelProtocol: "vxlan", AutoDirectNodeRoutes: true, KubeProxyReplacement: true,
		Masquerading: MasqBPF, HostRouting: HostRouting{Mode: HostRoutingBPF}}
	tests := []struct {
		name      string
		cur, next Modes
		want      []string
	}{
		{name: "no change", cur: legacy, next: legacy},
		{name: "story switch plus tunnel", cur: legacy, next: bpf, want: []string{
			"Host Routing: Legacy -> BPF",
			"Masquerading: IPTables -> BPF",
			"Routing: Native -> Tunnel [vxlan]",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, DiffModes(tt.cur, tt.next), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("DiffModes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewPreviewStory(t *testing.T) {
	cm := map[string]string{KeyKubeProxyReplacement: "true"}
	current := mustResolve(t, Inputs{ConfigMap: cm})
	p, err := NewPreview(current, Inputs{
		ConfigMap:   cm,
		NodeConfigs: []NodeConfig{nc("glia-switch-from-iptables-ebpf", ebpfSel, map[string]string{KeyBPFMasquerade: "true"})},
		NodeLabels:  map[string]string{"io.glia.enable-ebpf": "true"},
	}, fullKernel)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"glia-system/glia-switch-from-iptables-ebpf"}, p.Matching); diff != "" {
		t.Errorf("Matching (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Host Routing: Legacy -> BPF", "Masquerading: IPTables -> BPF"}, p.ModeChanges); diff != "" {
		t.Errorf("ModeChanges (-want +got):\n%s", diff)
	}
	if len(p.Changes) != 1 || p.Changes[0].Key != KeyBPFMasquerade || !p.Changes[0].Disruptive {
		t.Errorf("Changes = %+v, want one disruptive enable-bpf-masquerade change", p.Changes)
	}
	if p.Modes.Err() != nil {
		t.Errorf("Modes.Err() = %v", p.Modes.Err())
	}
}
