package config

import (
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCiliumKeys(t *testing.T) {
	tests := []struct {
		name string
		in   Inputs
		// wantWarnings are the warnings' messages; wantErr substrings of the
		// error ("" none).
		wantWarnings []string
		wantErr      []string
	}{
		{
			name: "ignored keys warn once per source, in key order",
			in: Inputs{
				ConfigMap: map[string]string{"enable-hubble": "true", "cluster-name": "default", "enable-ipv6": "false",
					"ipam": "cluster-pool", KeyBPFMasquerade: "true"},
				NodeConfigs: []NodeConfig{nc("n", metav1.LabelSelector{}, map[string]string{"enable-policy": "default"})},
			},
			wantWarnings: []string{
				"ConfigMap glia-config sets Cilium keys glia does not implement, ignored: cluster-name, enable-hubble, enable-ipv6, ipam",
				"GliaNodeConfig glia-system/n sets Cilium keys glia does not implement, ignored: enable-policy",
			},
		},
		{
			name: "ipam kubernetes is what glia does",
			in:   Inputs{ConfigMap: map[string]string{"ipam": "kubernetes"}},
			wantWarnings: []string{
				"ConfigMap glia-config sets Cilium keys glia does not implement, ignored: ipam",
			},
		},
		{
			name:    "ipv6 refuses",
			in:      Inputs{ConfigMap: map[string]string{"enable-ipv6": "true", "enable-hubble": "true"}},
			wantErr: []string{`enable-ipv6: "true" (from ConfigMap glia-config), a Cilium key glia does not implement: glia is IPv4 only`},
		},
		{
			name:    "an ipam mode glia lacks refuses",
			in:      Inputs{ConfigMap: map[string]string{"ipam": "eni"}},
			wantErr: []string{`ipam: "eni" (from ConfigMap glia-config), a Cilium key glia does not implement:`, `no ipam mode "eni"`},
		},
		{
			name:    "the old tunnel key refuses with what to set",
			in:      Inputs{ConfigMap: map[string]string{"tunnel": "disabled"}},
			wantErr: []string{`tunnel: "disabled"`, "set routing-mode (native|tunnel) and tunnel-protocol (vxlan) instead"},
		},
		{
			name:    "encryption refuses",
			in:      Inputs{NodeConfigs: []NodeConfig{nc("n", metav1.LabelSelector{}, map[string]string{"enable-wireguard": "true"})}},
			wantErr: []string{`enable-wireguard: "true" (from GliaNodeConfig glia-system/n)`, "does not encrypt"},
		},
		{
			name:    "a datapath mode glia lacks refuses",
			in:      Inputs{ConfigMap: map[string]string{"datapath-mode": "netkit"}},
			wantErr: []string{`no datapath-mode "netkit"`},
		},
		{
			name:    "direct server return refuses",
			in:      Inputs{ConfigMap: map[string]string{"bpf-lb-mode": "dsr"}},
			wantErr: []string{`glia has no bpf-lb-mode "dsr"`},
		},
		{
			name:         "encryption off is only ignored",
			in:           Inputs{ConfigMap: map[string]string{"enable-wireguard": "false", "datapath-mode": "veth"}},
			wantWarnings: []string{"ConfigMap glia-config sets Cilium keys glia does not implement, ignored: datapath-mode, enable-wireguard"},
		},
		{
			name:    "a key neither glia's nor Cilium's still refuses, with a suggestion",
			in:      Inputs{ConfigMap: map[string]string{"enable-hubble": "true", "enable-bpf-masqurade": "true"}},
			wantErr: []string{`unknown config key "enable-bpf-masqurade" in ConfigMap glia-config (did you mean "enable-bpf-masquerade"?)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, warnings, err := Resolve(tt.in)
			if len(tt.wantErr) > 0 {
				if err == nil || c != nil {
					t.Fatalf("Resolve: config %v, error %v; want an error containing %q", c != nil, err, tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			var got []string
			for _, w := range warnings {
				got = append(got, w.Message)
			}
			if d := cmp.Diff(tt.wantWarnings, got); d != "" {
				t.Errorf("warnings (-want +got):\n%s", d)
			}
		})
	}
}

// Every listed Cilium key is distinct, none is a glia key (the index
// panics otherwise), and each is refused or ignored, never unknown.
func TestCiliumKeysListed(t *testing.T) {
	names := ciliumKeyNames()
	if len(names) < 50 {
		t.Fatalf("%d Cilium keys listed", len(names))
	}
	for _, n := range names {
		if known, _ := lookupCilium(n, "false"); !known {
			t.Errorf("%s: listed but not found", n)
		}
		if _, glia := LookupKey(n); glia {
			t.Errorf("%s: a glia key listed as Cilium's", n)
		}
	}
	if known, _ := lookupCilium("hubble-relay", "x"); known {
		t.Error("hubble-relay is not a cilium-config key")
	}
}

// ciliumKeyNames lists the Cilium keys glia knows and does not implement,
// sorted.
func ciliumKeyNames() []string {
	out := make([]string, len(ciliumKeys))
	for i, k := range ciliumKeys {
		out[i] = k.name
	}
	sort.Strings(out)
	return out
}
