package config

import (
	"fmt"
	"strings"
)

// ciliumKey is a key of Cilium's ConfigMap cilium-config, as Cilium's
// documentation names it, that glia does not implement. A ConfigMap copied
// from Cilium may carry it: glia ignores it with a warning, unless refuse
// says its value asks for behaviour glia cannot give (then the config is
// refused with that reason).
type ciliumKey struct {
	name string
	// refuse returns why value cannot be honoured; "" when ignoring the
	// key loses nothing the cluster relies on. nil: always ignored.
	refuse func(value string) string
}

func isTrue(v string) bool { return strings.EqualFold(strings.TrimSpace(v), "true") }

// refuseIfTrue refuses "true" with reason.
func refuseIfTrue(reason string) func(string) string {
	return func(v string) string {
		if isTrue(v) {
			return reason
		}
		return ""
	}
}

// ciliumKeys: Cilium's documented cilium-config keys glia has no key for.
// Keys glia implements under the same name (routing-mode, tunnel-protocol,
// kube-proxy-replacement, enable-bpf-masquerade, …) are glia keys and are
// not listed here.
var ciliumKeys = []ciliumKey{
	// Would change behaviour glia cannot honour.
	{"enable-ipv6", refuseIfTrue("glia is IPv4 only: pods would get no IPv6 address; set enable-ipv6: \"false\" or remove it")},
	{"enable-ipv4", func(v string) string {
		if strings.EqualFold(strings.TrimSpace(v), "false") {
			return "glia needs IPv4: remove enable-ipv4 or set it to \"true\""
		}
		return ""
	}},
	{"ipam", func(v string) string {
		switch strings.TrimSpace(v) {
		case "cluster-pool", "kubernetes", "":
			return ""
		}
		return fmt.Sprintf("glia allocates pod addresses from each Node's pod CIDR (ipam modes cluster-pool and kubernetes); it has no ipam mode %q", strings.TrimSpace(v))
	}},
	{"tunnel", func(v string) string {
		return "Cilium's deprecated key tunnel is not read by glia: set routing-mode (native|tunnel) and tunnel-protocol (vxlan) instead"
	}},
	{"datapath-mode", func(v string) string {
		if m := strings.TrimSpace(v); m != "" && m != "veth" {
			return fmt.Sprintf("glia connects pods with veth pairs only; it has no datapath-mode %q", m)
		}
		return ""
	}},
	{"enable-wireguard", refuseIfTrue("glia does not encrypt traffic between nodes: pod traffic would cross the network in clear; remove enable-wireguard")},
	{"enable-ipsec", refuseIfTrue("glia does not encrypt traffic between nodes: pod traffic would cross the network in clear; remove enable-ipsec")},
	{"enable-l7-proxy", nil},
	{"enable-policy", nil},
	{"enable-hubble", nil},
	{"hubble-listen-address", nil},
	{"hubble-disable-tls", nil},
	{"hubble-socket-path", nil},
	{"hubble-metrics-server", nil},
	{"hubble-metrics", nil},
	{"cluster-name", nil},
	{"cluster-id", nil},
	{"identity-allocation-mode", nil},
	{"cilium-endpoint-gc-interval", nil},
	{"enable-bandwidth-manager", nil},
	{"enable-bbr", nil},
	{"enable-local-redirect-policy", nil},
	{"enable-endpoint-health-checking", nil},
	{"enable-health-checking", nil},
	{"enable-health-check-nodeport", nil},
	{"enable-well-known-identities", nil},
	{"enable-remote-node-identity", nil},
	{"enable-l2-neigh-discovery", nil},
	{"enable-endpoint-routes", nil},
	{"enable-local-node-route", nil},
	{"enable-session-affinity", nil},
	{"enable-svc-source-range-check", nil},
	{"enable-xt-socket-fallback", nil},
	{"enable-ipv4-big-tcp", nil},
	{"enable-ipv6-big-tcp", nil},
	{"enable-k8s-terminating-endpoint", nil},
	{"enable-metrics", nil},
	{"enable-bpf-clock-probe", nil},
	{"enable-auto-protect-node-port-range", nil},
	{"enable-vtep", nil},
	{"ipv4-native-routing-cidr", nil},
	{"cluster-pool-ipv4-mask-size", nil},
	{"install-iptables-rules", nil},
	{"install-no-conntrack-iptables-rules", nil},
	{"monitor-aggregation", nil},
	{"monitor-aggregation-interval", nil},
	{"monitor-aggregation-flags", nil},
	{"bpf-map-dynamic-size-ratio", nil},
	{"bpf-policy-map-max", nil},
	{"bpf-lb-external-clusterip", nil},
	{"bpf-lb-mode", func(v string) string {
		if m := strings.TrimSpace(v); m != "" && m != "snat" {
			return fmt.Sprintf("glia has no bpf-lb-mode %q (direct server return): remove bpf-lb-mode or set it to \"snat\"", m)
		}
		return ""
	}},
	{"bpf-lb-acceleration", nil},
	{"bpf-root", nil},
	{"preallocate-bpf-maps", nil},
	{"sidecar-istio-proxy-image", nil},
	{"cni-uninstall", nil},
	{"cni-exclusive", nil},
	{"cni-log-file", nil},
	{"custom-cni-conf", nil},
	{"write-cni-conf-when-ready", nil},
	{"cgroup-root", nil},
	{"arping-refresh-period", nil},
	{"kube-proxy-replacement-healthz-bind-address", nil},
	{"node-port-bind-protection", nil},
	{"operator-api-serve-addr", nil},
	{"operator-prometheus-serve-addr", nil},
	{"proxy-prometheus-port", nil},
	{"remove-cilium-node-taints", nil},
	{"set-cilium-is-up-condition", nil},
	{"set-cilium-node-taints", nil},
	{"unmanaged-pod-watcher-interval", nil},
	{"synchronize-k8s-nodes", nil},
	{"agent-not-ready-taint-key", nil},
	{"tofqdns-dns-reject-response-code", nil},
	{"tofqdns-enable-dns-compression", nil},
	{"tofqdns-endpoint-max-ip-per-hostname", nil},
	{"tofqdns-idle-connection-grace-period", nil},
	{"tofqdns-max-deferred-connection-deletes", nil},
	{"tofqdns-proxy-response-max-delay", nil},
	{"vtep-endpoint", nil},
	{"vtep-cidr", nil},
	{"vtep-mask", nil},
	{"vtep-mac", nil},
	{"egress-gateway-reconciliation-trigger-interval", nil},
	{"external-envoy-proxy", nil},
	{"enable-envoy-config", nil},
	{"mesh-auth-enabled", nil},
	{"direct-routing-skip-unreachable", nil},
	{"dnsproxy-enable-transparent-mode", nil},
	{"k8s-client-burst", nil},
	{"k8s-client-qps", nil},
	{"nodes-gc-interval", nil},
	{"vlan-bpf-bypass", nil},
}

var ciliumKeyIndex = func() map[string]int {
	m := make(map[string]int, len(ciliumKeys))
	for i, k := range ciliumKeys {
		if _, dup := m[k.name]; dup {
			panic("config: Cilium key listed twice: " + k.name)
		}
		if _, glia := keyIndex[k.name]; glia {
			panic("config: Cilium key " + k.name + " is a glia key")
		}
		m[k.name] = i
	}
	return m
}()

// lookupCilium says whether name is a Cilium key glia does not implement
// and, when its value cannot be honoured, why.
func lookupCilium(name, value string) (known bool, refusal string) {
	i, ok := ciliumKeyIndex[name]
	if !ok {
		return false, ""
	}
	if r := ciliumKeys[i].refuse; r != nil {
		return true, r(value)
	}
	return true, ""
}
