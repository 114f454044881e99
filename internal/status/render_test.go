package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
)

var (
	now        = time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)
	fullKernel = config.KernelProbe{TCX: true, BPFRedirectPeer: true, BPFRedirectNeigh: true, FIBLookup: true, VXLAN: true, KernelVersion: "6.18.0"}
	storyCM    = map[string]string{config.KeyKubeProxyReplacement: "true"}
	storyNC    = config.NodeConfig{
		Namespace: "glia-system", Name: "glia-switch-from-iptables-ebpf",
		Selector: metav1.LabelSelector{MatchLabels: map[string]string{"io.glia.enable-ebpf": "true"}},
		Defaults: map[string]string{config.KeyBPFMasquerade: "true"},
	}
)

// storyStatus builds the status of a node of the story from a real config
// resolution and Decide, as the agent does.
func storyStatus(t *testing.T, nodeLabels map[string]string, extra ...config.NodeConfig) *api.Status {
	t.Helper()
	c, warnings, err := config.Resolve(config.Inputs{
		ConfigMap: storyCM, ConfigMapName: "glia-system/glia-config",
		NodeConfigs: append([]config.NodeConfig{storyNC}, extra...),
		NodeLabels:  nodeLabels,
	})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	m := config.Decide(c.Typed(), fullKernel)
	s := &api.Status{
		NodeName:   "sandbox-04",
		Time:       now,
		Kubernetes: api.KubernetesStatus{State: "Ok", Version: "v1.37.2"},
		Ready:      true,
		Readiness: []api.ReadinessCheck{{Name: "endpoints-restored", OK: true}, {Name: "datapath", OK: true},
			{Name: "kubernetes", OK: true}, {Name: "reconcilers", OK: true}},
		Datapath:    "ebpf (tcx)",
		AgentUptime: 2*time.Hour + 5*time.Second,
		IPAM: api.IPAMStatus{PodCIDR: "198.19.4.0/24", Allocated: 3, Size: 253,
			Addresses: []string{"198.19.4.1 (router)", "198.19.4.87 (default/simple-webserver-q4h44)", "198.19.4.90 (default/curler)"}},
		Endpoints: 2,
		Services:  5,
		Controllers: []api.ControllerStatus{
			{Name: "sync-routes", LastSuccess: now.Add(-4 * time.Second)},
			{Name: "ipam-gc", LastSuccess: now.Add(-90 * time.Second), LastError: "list pods: connection refused", Failures: 2},
			{Name: "endpoint-restore", LastSuccess: now.Add(-2 * time.Hour)},
		},
		ClusterHealth: &api.ClusterHealthStatus{Reachable: 5, Total: 5, ProbeTime: time.Date(2026, 11, 26, 1, 1, 51, 0, time.UTC)},
	}
	FromConfig(s, c, warnings, m)
	s.KubeProxyReplacement.Devices = []string{"eth0 198.18.0.14"}
	if m.Masquerading == config.MasqBPF {
		s.Masquerading.Device = "eth0"
		s.Masquerading.CIDR = "198.19.0.0/16"
	}
	return s
}

func TestRender(t *testing.T) {
	tests := []struct {
		name    string
		status  func(t *testing.T) *api.Status
		verbose bool
		want    string
	}{
		{
			name:   "story: legacy because enable-bpf-masquerade is missing",
			status: func(t *testing.T) *api.Status { return storyStatus(t, nil) },
			want: `Kubernetes: Ok v1.37.2
Readiness: Ready
KubeProxyReplacement: True [eth0 198.18.0.14]
Node: sandbox-04
Datapath: ebpf (tcx)
Uptime: 2h0m5s
IPAM: IPv4: 3/253 allocated from 198.19.4.0/24
Endpoints: 2
Services: 5
Routing: Network: Native Host: Legacy
Host Routing: Legacy
  Reason: BPF host routing requires enable-bpf-masquerade=true (currently false, from default); falling back to legacy host routing
Masquerading: IPTables [IPv4: Enabled, IPv6: Disabled]
Controller Status: 2/3 healthy
  Name      Last success   Failures   Last error
  ipam-gc   1m30s ago      2          list pods: connection refused
Config sources: default (16), ConfigMap glia-system/glia-config (1)
Cluster health: 5/5 reachable (2026-11-26T01:01:51Z)
`,
		},
		{
			name: "story: labelled node runs BPF host routing and masquerading",
			status: func(t *testing.T) *api.Status {
				return storyStatus(t, map[string]string{"io.glia.enable-ebpf": "true"})
			},
			want: `Kubernetes: Ok v1.37.2
Readiness: Ready
KubeProxyReplacement: True [eth0 198.18.0.14]
Node: sandbox-04
Datapath: ebpf (tcx)
Uptime: 2h0m5s
IPAM: IPv4: 3/253 allocated from 198.19.4.0/24
Endpoints: 2
Services: 5
Routing: Network: Native Host: BPF
Host Routing: BPF
Masquerading: BPF [eth0] 198.19.0.0/16 [IPv4: Enabled, IPv6: Disabled]
Controller Status: 2/3 healthy
  Name      Last success   Failures   Last error
  ipam-gc   1m30s ago      2          list pods: connection refused
Config sources: default (15), ConfigMap glia-system/glia-config (1), GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf (1)
Cluster health: 5/5 reachable (2026-11-26T01:01:51Z)
`,
		},
		{
			name: "map migrations at start: one line a map, the reason of a loss",
			status: func(t *testing.T) *api.Status {
				s := storyStatus(t, map[string]string{"io.glia.enable-ebpf": "true"})
				s.MapMigrations = []api.MapMigration{
					{Map: "glia_ct", Action: "migrated", FromVersion: 1, ToVersion: 1, FromMax: 65536, ToMax: 131072, Carried: 120},
					{Map: "glia_affinity", Action: "reset", FromVersion: 1, ToVersion: 2, FromMax: 1024, ToMax: 1024, Lost: 6, FlowsLost: 6,
						Reason: "no converter from layout version 1"},
					{Map: "glia_nat", Action: "migrated", FromVersion: 1, ToVersion: 1, FromMax: 4, ToMax: 2, Carried: 2, Lost: 2, FlowsLost: 1,
						Reason: "max-entries 4 -> 2"},
				}
				return s
			},
			want: `Kubernetes: Ok v1.37.2
Readiness: Ready
KubeProxyReplacement: True [eth0 198.18.0.14]
Node: sandbox-04
Datapath: ebpf (tcx)
Uptime: 2h0m5s
IPAM: IPv4: 3/253 allocated from 198.19.4.0/24
Endpoints: 2
Services: 5
Routing: Network: Native Host: BPF
Host Routing: BPF
Masquerading: BPF [eth0] 198.19.0.0/16 [IPv4: Enabled, IPv6: Disabled]
Map migrations: 3 maps, 122 entries carried, 8 entries lost (7 flows)
  glia_ct: migrated layout v1 -> v1, max entries 65536 -> 131072, 120 carried, 0 lost
  glia_affinity: reset layout v1 -> v2, max entries 1024 -> 1024, 0 carried, 6 lost (no converter from layout version 1)
  glia_nat: migrated layout v1 -> v1, max entries 4 -> 2, 2 carried, 2 lost (1 flows) (max-entries 4 -> 2)
Controller Status: 2/3 healthy
  Name      Last success   Failures   Last error
  ipam-gc   1m30s ago      2          list pods: connection refused
Config sources: default (15), ConfigMap glia-system/glia-config (1), GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf (1)
Cluster health: 5/5 reachable (2026-11-26T01:01:51Z)
`,
		},
		{
			name: "verbose: fixes, sources with overrides, warnings, addresses, all controllers",
			status: func(t *testing.T) *api.Status {
				legacy := config.NodeConfig{Namespace: "glia-system", Name: "zz-keep-legacy",
					Defaults: map[string]string{config.KeyBPFMasquerade: "false", config.KeyDebug: "true"}}
				s := storyStatus(t, map[string]string{"io.glia.enable-ebpf": "true"}, legacy)
				s.ClusterHealth = &api.ClusterHealthStatus{Reachable: 3, Total: 5, ProbeTime: now,
					Unreachable: []string{"sandbox-02", "sandbox-03"}}
				return s
			},
			verbose: true,
			want: `Kubernetes: Ok v1.37.2
Readiness: Ready
KubeProxyReplacement: True [eth0 198.18.0.14]
  Reason: kube-proxy-replacement=true (from ConfigMap glia-system/glia-config)
Node: sandbox-04
Datapath: ebpf (tcx)
Uptime: 2h0m5s
IPAM: IPv4: 3/253 allocated from 198.19.4.0/24
Allocated addresses:
  198.19.4.1 (router)
  198.19.4.87 (default/simple-webserver-q4h44)
  198.19.4.90 (default/curler)
Endpoints: 2
Services: 5
Routing: Network: Native Host: Legacy
  Direct node routes: Enabled
Host Routing: Legacy
  Reason: BPF host routing requires enable-bpf-masquerade=true (currently false, from GliaNodeConfig glia-system/zz-keep-legacy); falling back to legacy host routing
  Blocking key: enable-bpf-masquerade
  Fix: set enable-bpf-masquerade: "true" in ConfigMap glia-config or in a GliaNodeConfig selecting this node, then restart the agent
Masquerading: IPTables [IPv4: Enabled, IPv6: Disabled]
Controller Status: 2/3 healthy
  Name               Last success   Failures   Last error
  endpoint-restore   2h0m0s ago     0          no error
  ipam-gc            1m30s ago      2          list pods: connection refused
  sync-routes        4s ago         0          no error
Config sources: default (14), ConfigMap glia-system/glia-config (1), GliaNodeConfig glia-system/zz-keep-legacy (2)
  Warning: enable-bpf-masquerade is set by GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf ("true") and GliaNodeConfig glia-system/zz-keep-legacy ("false"), which all select this node; glia-system/zz-keep-legacy wins (later by name)
  auto-direct-node-routes      true              default
  bpf-ct-map-max               131072            default
  bpf-lb-algorithm             random            default
  bpf-lb-map-max               65536             default
  bpf-nat-map-max              131072            default
  cluster-pool-ipv4-cidr       198.19.0.0/16     default
  debug                        true              GliaNodeConfig glia-system/zz-keep-legacy
  enable-bpf-masquerade        false             GliaNodeConfig glia-system/zz-keep-legacy (overrides GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf)
  enable-host-legacy-routing   ""                default
  enable-ipv4-masquerade       true              default
  health-port                  4240              default
  kube-proxy-replacement       true              ConfigMap glia-system/glia-config
  mtu                          0                 default
  prometheus-serve-addr        :9962             default
  routing-mode                 native            default
  service-cidr                 198.18.128.0/17   default
  tunnel-protocol              vxlan             default
Cluster health: 3/5 reachable (2026-11-26T01:02:03Z)
  Unreachable: sandbox-02, sandbox-03
`,
		},
		{
			name: "hand-built: kube-proxy, tunnel, masquerading disabled, no health, no pod CIDR, no clock",
			status: func(t *testing.T) *api.Status {
				return &api.Status{
					NodeName:     "lab-1",
					Kubernetes:   api.KubernetesStatus{State: "Disabled"},
					Routing:      api.RoutingStatus{Mode: "tunnel", TunnelProtocol: "vxlan"},
					HostRouting:  api.HostRoutingStatus{Mode: "Legacy", Reason: "forced by enable-host-legacy-routing=true (from flag --enable-host-legacy-routing)"},
					Masquerading: api.MasqueradingStatus{Mode: "Disabled"},
					ConfigSources: []api.ConfigSource{
						{Key: "enable-host-legacy-routing", Value: "true", Source: "flag --enable-host-legacy-routing", Kind: "flag"},
						{Key: "routing-mode", Value: "tunnel", Source: "ConfigMap glia-config", Kind: "configmap"},
					},
					Controllers: []api.ControllerStatus{
						{Name: "a", LastSuccess: now, LastError: "x", Failures: 1},
						{Name: "b", LastError: "never worked", Failures: 7},
					},
				}
			},
			want: `Kubernetes: Disabled
Readiness: Unknown
KubeProxyReplacement: False [kube-proxy handles Services]
Node: lab-1
Datapath: Unknown
Uptime: 0s
IPAM: IPv4: no pod CIDR assigned yet
Endpoints: 0
Services: 0
Routing: Network: Tunnel [vxlan] Host: Legacy
Host Routing: Legacy
  Reason: forced by enable-host-legacy-routing=true (from flag --enable-host-legacy-routing)
Masquerading: Disabled
Controller Status: 0/2 healthy
  Name   Last success           Failures   Last error
  a      2026-11-26T01:02:03Z   1          x
  b      never                  7          never worked
Config sources: flag --enable-host-legacy-routing (1), ConfigMap glia-config (1)
Cluster health: Probe disabled
`,
		},
		{
			name: "kubernetes error and BPF reason only in verbose",
			status: func(t *testing.T) *api.Status {
				return &api.Status{
					Kubernetes: api.KubernetesStatus{State: "unable to reach 198.18.0.1:6443: connection refused"},
					Readiness: []api.ReadinessCheck{{Name: "endpoints-restored", OK: true}, {Name: "datapath", OK: true},
						{Name: "kubernetes", Message: "the API server has not answered for longer than 1m0s (last answer never)"},
						{Name: "reconcilers", Message: "in error: sync-nodes (2 failures: x)"}},
					HostRouting:  api.HostRoutingStatus{Mode: "BPF", Reason: "all requirements hold"},
					Masquerading: api.MasqueradingStatus{Mode: "BPF", IPv4: true},
					Routing:      api.RoutingStatus{Mode: "native"},
				}
			},
			want: `Kubernetes: unable to reach 198.18.0.1:6443: connection refused
Readiness: Not ready: kubernetes, reconcilers
  kubernetes: the API server has not answered for longer than 1m0s (last answer never)
  reconcilers: in error: sync-nodes (2 failures: x)
KubeProxyReplacement: False [kube-proxy handles Services]
Node: Unknown
Datapath: Unknown
Uptime: 0s
IPAM: IPv4: no pod CIDR assigned yet
Endpoints: 0
Services: 0
Routing: Network: Native Host: BPF
Host Routing: BPF
Masquerading: BPF [IPv4: Enabled, IPv6: Disabled]
Controller Status: 0/0 healthy
Config sources: unknown
Cluster health: Probe disabled
`,
		},
		{
			name: "reconcilers: failing objects always, the table with -v; Services outside service-cidr",
			status: func(t *testing.T) *api.Status {
				return &api.Status{
					Kubernetes: api.KubernetesStatus{State: "Ok", Version: "v1.37.2"}, Services: 12, ServicesOutsideCIDR: 2, ServiceCIDR: "198.18.128.0/17",
					Reconcilers: []api.ReconcilerStatus{
						{Name: "endpoints", Objects: 3, Done: 2, Errors: 1, Failing: []string{"c1/eth0: host interface gl1: link not found"}, Repairs: 4},
						{Name: "nodes", Objects: 3, Done: 3},
					},
				}
			},
			verbose: true,
			want: `Kubernetes: Ok v1.37.2
Readiness: Unknown
KubeProxyReplacement: False [kube-proxy handles Services]
Node: Unknown
Datapath: Unknown
Uptime: 0s
IPAM: IPv4: no pod CIDR assigned yet
Endpoints: 0
Services: 12 (2 with a ClusterIP outside service-cidr 198.18.128.0/17: set service-cidr to kube-apiserver's --service-cluster-ip-range)
Routing: Network: Unknown Host: Unknown
Host Routing: Unknown
Masquerading: Unknown
Reconcilers: 1/2 healthy, 6 objects
  Name        Objects   Done   Pending   Errors   Repaired
  endpoints   3         2      0         1        4
  nodes       3         3      0         0        0
  endpoints: c1/eth0: host interface gl1: link not found
Controller Status: 0/0 healthy
Config sources: unknown
Cluster health: Probe disabled
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Render(&b, tt.status(t), tt.verbose); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(strings.Split(tt.want, "\n"), strings.Split(b.String(), "\n")); diff != "" {
				t.Errorf("Render (-want +got):\n%s\ngot:\n%s", diff, b.String())
			}
		})
	}
}
