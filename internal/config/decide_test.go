package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var fullKernel = KernelProbe{TCX: true, BPFRedirectPeer: true, BPFRedirectNeigh: true, FIBLookup: true, VXLAN: true, KernelVersion: "6.18.0"}

func resolveCM(t *testing.T, cm map[string]string) Resolved {
	t.Helper()
	c, _, err := Resolve(Inputs{ConfigMap: cm, ConfigMapName: "glia-system/glia-config"})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	return c.Typed()
}

func TestDecide(t *testing.T) {
	oldKernel := KernelProbe{FIBLookup: true, VXLAN: true, KernelVersion: "5.4.0"}
	tests := []struct {
		name   string
		cm     map[string]string
		kernel KernelProbe
		want   Modes
	}{
		{
			name:   "defaults: legacy, iptables, kube-proxy",
			kernel: fullKernel,
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, Masquerading: MasqIPTables,
				HostRouting: HostRouting{
					Mode: HostRoutingLegacy,
					Reason: "BPF host routing requires kube-proxy-replacement=true (currently false, from default) and " +
						"enable-bpf-masquerade=true (currently false, from default); falling back to legacy host routing",
					BlockingKey: KeyKubeProxyReplacement,
					Fix:         `set kube-proxy-replacement: "true" and set enable-bpf-masquerade: "true" in ConfigMap glia-config or in a GliaNodeConfig selecting this node, then restart the agent`,
				},
			},
		},
		{
			name:   "the story: kube-proxy-replacement without bpf masquerade",
			cm:     map[string]string{KeyKubeProxyReplacement: "true", KeyBPFMasquerade: "false"},
			kernel: fullKernel,
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, KubeProxyReplacement: true, Masquerading: MasqIPTables,
				HostRouting: HostRouting{
					Mode:        HostRoutingLegacy,
					Reason:      "BPF host routing requires enable-bpf-masquerade=true (currently false, from ConfigMap glia-system/glia-config); falling back to legacy host routing",
					BlockingKey: KeyBPFMasquerade,
					Fix:         `set enable-bpf-masquerade: "true" in ConfigMap glia-config or in a GliaNodeConfig selecting this node, then restart the agent`,
				},
			},
		},
		{
			name:   "the story fixed: BPF host routing and BPF masquerading",
			cm:     map[string]string{KeyKubeProxyReplacement: "true", KeyBPFMasquerade: "true"},
			kernel: fullKernel,
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, KubeProxyReplacement: true, Masquerading: MasqBPF,
				HostRouting: HostRouting{
					Mode:   HostRoutingBPF,
					Reason: "kube-proxy-replacement, BPF masquerading and the kernel helpers bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup are available",
				},
			},
		},
		{
			name:   "masquerading disabled: bpf masquerade not required",
			cm:     map[string]string{KeyKubeProxyReplacement: "true", KeyIPv4Masquerade: "false"},
			kernel: fullKernel,
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, KubeProxyReplacement: true, Masquerading: MasqDisabled,
				HostRouting: HostRouting{
					Mode:   HostRoutingBPF,
					Reason: "kube-proxy-replacement and the kernel helpers bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup are available (masquerading is disabled)",
				},
			},
		},
		{
			name:   "forced legacy",
			cm:     map[string]string{KeyKubeProxyReplacement: "true", KeyBPFMasquerade: "true", KeyHostLegacyRouting: "true"},
			kernel: fullKernel,
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, KubeProxyReplacement: true, Masquerading: MasqBPF,
				HostRouting: HostRouting{
					Mode:        HostRoutingLegacy,
					Reason:      "forced by enable-host-legacy-routing=true (from ConfigMap glia-system/glia-config)",
					BlockingKey: KeyHostLegacyRouting,
					Fix:         "remove enable-host-legacy-routing",
				},
			},
		},
		{
			name:   "forced legacy with other requirements missing says so in the fix",
			cm:     map[string]string{KeyKubeProxyReplacement: "true", KeyHostLegacyRouting: "true"},
			kernel: fullKernel,
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, KubeProxyReplacement: true, Masquerading: MasqIPTables,
				HostRouting: HostRouting{
					Mode:        HostRoutingLegacy,
					Reason:      "forced by enable-host-legacy-routing=true (from ConfigMap glia-system/glia-config)",
					BlockingKey: KeyHostLegacyRouting,
					Fix: `remove enable-host-legacy-routing; BPF host routing requires enable-bpf-masquerade=true (currently false, from default): ` +
						`set enable-bpf-masquerade: "true" in ConfigMap glia-config or in a GliaNodeConfig selecting this node, then restart the agent`,
				},
			},
		},
		{
			name:   "explicit false with requirements met",
			cm:     map[string]string{KeyKubeProxyReplacement: "true", KeyBPFMasquerade: "true", KeyHostLegacyRouting: "false"},
			kernel: fullKernel,
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, KubeProxyReplacement: true, Masquerading: MasqBPF,
				HostRouting: HostRouting{
					Mode: HostRoutingBPF,
					Reason: "requested by enable-host-legacy-routing=false (from ConfigMap glia-system/glia-config); " +
						"kube-proxy-replacement, BPF masquerading and the kernel helpers bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup are available",
				},
			},
		},
		{
			name:   "explicit false that cannot be honoured is an error",
			cm:     map[string]string{KeyKubeProxyReplacement: "true", KeyHostLegacyRouting: "false"},
			kernel: fullKernel,
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, KubeProxyReplacement: true, Masquerading: MasqIPTables,
				HostRouting: HostRouting{
					Mode:        HostRoutingLegacy,
					Reason:      "BPF host routing requires enable-bpf-masquerade=true (currently false, from default)",
					BlockingKey: KeyBPFMasquerade,
					Fix:         `set enable-bpf-masquerade: "true" in ConfigMap glia-config or in a GliaNodeConfig selecting this node, then restart the agent`,
				},
				Errors: []string{
					`enable-host-legacy-routing=false (from ConfigMap glia-system/glia-config) requests BPF host routing, which cannot be honoured: ` +
						`BPF host routing requires enable-bpf-masquerade=true (currently false, from default). ` +
						`Fix: set enable-bpf-masquerade: "true" in ConfigMap glia-config or in a GliaNodeConfig selecting this node, then restart the agent; ` +
						`or remove enable-host-legacy-routing to fall back to legacy host routing`,
				},
			},
		},
		{
			name:   "old kernel: legacy with the kernel named, no blocking key",
			cm:     map[string]string{KeyKubeProxyReplacement: "true", KeyBPFMasquerade: "true"},
			kernel: oldKernel,
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, KubeProxyReplacement: true, Masquerading: MasqBPF,
				HostRouting: HostRouting{
					Mode:   HostRoutingLegacy,
					Reason: "BPF host routing requires the kernel helpers bpf_redirect_peer and bpf_redirect_neigh (missing in kernel 5.4.0); falling back to legacy host routing",
					Fix:    "run a kernel that has bpf_redirect_peer and bpf_redirect_neigh (5.10 or later)",
				},
			},
		},
		{
			name:   "bpf masquerade without fib lookup fails loudly",
			cm:     map[string]string{KeyBPFMasquerade: "true", KeyHostLegacyRouting: "true"},
			kernel: KernelProbe{BPFRedirectPeer: true, BPFRedirectNeigh: true, KernelVersion: "4.14.0"},
			want: Modes{
				RoutingMode: "native", AutoDirectNodeRoutes: true, Masquerading: MasqBPF,
				HostRouting: HostRouting{
					Mode:        HostRoutingLegacy,
					Reason:      "forced by enable-host-legacy-routing=true (from ConfigMap glia-system/glia-config)",
					BlockingKey: KeyHostLegacyRouting,
					Fix: `remove enable-host-legacy-routing; BPF host routing requires kube-proxy-replacement=true (currently false, from default) and the kernel helper bpf_fib_lookup (missing in kernel 4.14.0): ` +
						`set kube-proxy-replacement: "true" in ConfigMap glia-config or in a GliaNodeConfig selecting this node, then restart the agent; run a kernel that has bpf_fib_lookup (5.10 or later)`,
				},
				Errors: []string{
					`enable-bpf-masquerade=true (from ConfigMap glia-system/glia-config) cannot be honoured: kernel 4.14.0 lacks the bpf_fib_lookup helper that BPF masquerading needs ` +
						`(run a kernel with it, 4.18 or later, or set enable-bpf-masquerade: "false" to masquerade with iptables)`,
				},
			},
		},
		{
			name:   "tunnel without vxlan fails loudly",
			cm:     map[string]string{KeyRoutingMode: "tunnel", KeyKubeProxyReplacement: "true", KeyBPFMasquerade: "true"},
			kernel: KernelProbe{BPFRedirectPeer: true, BPFRedirectNeigh: true, FIBLookup: true},
			want: Modes{
				RoutingMode: "tunnel", TunnelProtocol: "vxlan", AutoDirectNodeRoutes: true, KubeProxyReplacement: true, Masquerading: MasqBPF,
				HostRouting: HostRouting{
					Mode:   HostRoutingBPF,
					Reason: "kube-proxy-replacement, BPF masquerading and the kernel helpers bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup are available",
				},
				Errors: []string{`routing-mode=tunnel (from ConfigMap glia-system/glia-config) cannot be honoured: this kernel has no vxlan support (load the vxlan module, or set routing-mode: "native")`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(resolveCM(t, tt.cm), tt.kernel)
			// Datapath is covered by TestDecideDatapath.
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(Modes{}, "Datapath")); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
			if (got.Err() != nil) != (len(tt.want.Errors) > 0) {
				t.Errorf("Err() = %v with Errors %q", got.Err(), got.Errors)
			}
		})
	}
}

func TestHostRoutingMessage(t *testing.T) {
	m := Decide(resolveCM(t, map[string]string{KeyKubeProxyReplacement: "true"}), fullKernel)
	want := `BPF host routing requires enable-bpf-masquerade=true (currently false, from default); falling back to legacy host routing. ` +
		`Fix: set enable-bpf-masquerade: "true" in ConfigMap glia-config or in a GliaNodeConfig selecting this node, then restart the agent`
	if got := m.HostRouting.Message(); got != want {
		t.Errorf("Message() =\n%s\nwant\n%s", got, want)
	}
}

func TestDecideHandBuiltResolvedWithoutSources(t *testing.T) {
	m := Decide(Resolved{RoutingMode: "native", IPv4Masquerade: true, KubeProxyReplacement: true}, fullKernel)
	want := "BPF host routing requires enable-bpf-masquerade=true (currently false, from unknown source); falling back to legacy host routing"
	if m.HostRouting.Reason != want {
		t.Errorf("Reason = %q, want %q", m.HostRouting.Reason, want)
	}
}

// The decision names the implementation too: legacy exactly where it can
// run everything decided.
func TestDecideDatapath(t *testing.T) {
	full := KernelProbe{TCX: true, BPFRedirectPeer: true, BPFRedirectNeigh: true, FIBLookup: true, VXLAN: true}
	tests := []struct {
		name string
		cm   map[string]string
		want string
	}{
		{name: "defaults: native, iptables masquerade, kube-proxy", want: DatapathLegacy},
		{name: "no masquerade", cm: map[string]string{KeyIPv4Masquerade: "false"}, want: DatapathLegacy},
		{name: "auto-direct-node-routes off", cm: map[string]string{KeyAutoDirectNodeRoutes: "false"}, want: DatapathLegacy},
		{name: "tunnel", cm: map[string]string{KeyRoutingMode: "tunnel"}, want: DatapathBPF},
		{name: "kube-proxy replacement, legacy host routing", cm: map[string]string{KeyKubeProxyReplacement: "true"}, want: DatapathBPF},
		{name: "BPF masquerade alone", cm: map[string]string{KeyBPFMasquerade: "true"}, want: DatapathBPF},
		{name: "BPF host routing", cm: map[string]string{KeyKubeProxyReplacement: "true", KeyBPFMasquerade: "true"}, want: DatapathBPF},
		{name: "everything, forced legacy host routing", cm: map[string]string{KeyKubeProxyReplacement: "true", KeyBPFMasquerade: "true",
			KeyHostLegacyRouting: "true"}, want: DatapathBPF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(resolveCM(t, tt.cm), full).Datapath; got != tt.want {
				t.Errorf("Datapath = %q, want %q", got, tt.want)
			}
		})
	}
}
