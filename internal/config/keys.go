// Package config defines the glia agent's config keys, resolves a node's
// effective config from its layered sources (built-in defaults, flags,
// ConfigMap glia-config, GliaNodeConfigs selecting the node), validates it,
// decides the datapath modes a kernel allows (and why), and previews what a
// config change would do.
//
// Precedence, lowest first:
//
//  1. built-in defaults
//  2. agent flags (only flags set explicitly on the command line)
//  3. ConfigMap glia-config in the agent's namespace
//  4. every GliaNodeConfig whose spec.nodeSelector matches the node's labels,
//     ordered by name; a later one wins over an earlier one
//
// DESIGN.md lists "flags and built-in defaults" together as layer 1; here
// explicitly set flags sit just above the defaults, so a ConfigMap or a
// GliaNodeConfig always overrides a flag (as Cilium's ConfigMap does).
//
// Every key takes effect when the agent restarts.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Type is the value type of a config key.
type Type string

// Value types.
const (
	TypeBool         Type = "bool"          // "true" or "false"
	TypeOptionalBool Type = "optional-bool" // "true", "false" or "" (unset)
	TypeEnum         Type = "enum"          // one of Key.Enum
	TypeInt          Type = "int"           // decimal in [Key.Min, Key.Max], or Key.Zero when ZeroAllowed
	TypeCIDR         Type = "ipv4-cidr"     // an IPv4 prefix in canonical form
	TypeAddr         Type = "listen-address"
)

// Key names.
const (
	KeyRoutingMode          = "routing-mode"
	KeyAutoDirectNodeRoutes = "auto-direct-node-routes"
	KeyTunnelProtocol       = "tunnel-protocol"
	KeyKubeProxyReplacement = "kube-proxy-replacement"
	KeyBPFMasquerade        = "enable-bpf-masquerade"
	KeyIPv4Masquerade       = "enable-ipv4-masquerade"
	KeyHostLegacyRouting    = "enable-host-legacy-routing"
	KeyLBAlgorithm          = "bpf-lb-algorithm"
	KeyLBMapMax             = "bpf-lb-map-max"
	KeyCTMapMax             = "bpf-ct-map-max"
	KeyNATMapMax            = "bpf-nat-map-max"
	KeyClusterCIDR          = "cluster-pool-ipv4-cidr"
	KeyServiceCIDR          = "service-cidr"
	KeyHealthPort           = "health-port"
	KeyPrometheusServeAddr  = "prometheus-serve-addr"
	KeyMTU                  = "mtu"
	KeyDebug                = "debug"
)

// Key describes one config key.
type Key struct {
	Name    string
	Type    Type
	Default string
	// Allowed describes the accepted values, for help and error messages.
	Allowed string
	Help    string
	Enum    []string // TypeEnum
	Min     int      // TypeInt
	Max     int      // TypeInt
	// ZeroAllowed accepts 0 besides [Min, Max] (TypeInt), e.g. mtu 0 = auto.
	ZeroAllowed bool
	// RequiresRestart: the change takes effect when the agent restarts.
	// True for every key: the agent reads its config once, at start.
	RequiresRestart bool
	// Disruptive: changing the key on a running node can interrupt
	// established traffic. DisruptionNote says how, or why not.
	Disruptive     bool
	DisruptionNote string
}

var keys = []Key{
	{
		Name: KeyRoutingMode, Type: TypeEnum, Default: "native", Enum: []string{"native", "tunnel"},
		Help:       "how pod traffic crosses nodes: native (the underlay routes pod CIDRs) or tunnel (VXLAN between nodes)",
		Disruptive: true,
		DisruptionNote: "cross-node pod traffic is routed natively or encapsulated; while nodes disagree, " +
			"packets between them are dropped: change it on every node in one maintenance window",
	},
	{
		Name: KeyAutoDirectNodeRoutes, Type: TypeBool, Default: "true",
		Help:       `native routing: install a route "remote pod CIDR via node IP" for every other node`,
		Disruptive: true,
		DisruptionNote: "turning it off removes the routes to other nodes' pod CIDRs: cross-node pod traffic " +
			"breaks unless the underlay routes them",
	},
	{
		Name: KeyTunnelProtocol, Type: TypeEnum, Default: "vxlan", Enum: []string{"vxlan"},
		Help:           "encapsulation used in tunnel routing mode",
		Disruptive:     true,
		DisruptionNote: "every node must use the same encapsulation: nodes that disagree cannot reach each other's pods",
	},
	{
		Name: KeyKubeProxyReplacement, Type: TypeBool, Default: "false",
		Help:       "load-balance Services (ClusterIP, NodePort) with glia's eBPF programs instead of kube-proxy",
		Disruptive: true,
		DisruptionNote: "established connections to Services were translated by the old implementation " +
			"(kube-proxy's netfilter conntrack, or glia's BPF conntrack map); the new one has no record of them " +
			"and may pick another backend or fail to reverse-translate replies: drain the node first, " +
			"and run kube-proxy exactly where kube-proxy-replacement is false",
	},
	{
		Name: KeyBPFMasquerade, Type: TypeBool, Default: "false",
		Help:       "masquerade traffic leaving the cluster with eBPF on the node's device instead of an iptables MASQUERADE rule",
		Disruptive: true,
		DisruptionNote: "NAT state of established masqueraded connections to the outside lives in the implementation " +
			"that created it (netfilter conntrack for iptables, glia's BPF NAT map for BPF); after the switch the " +
			"other implementation has no mapping for them, so their replies are not translated back and those " +
			"connections break: drain the node first",
	},
	{
		Name: KeyIPv4Masquerade, Type: TypeBool, Default: "true",
		Help:       "masquerade IPv4 traffic from pods to destinations outside the cluster CIDR",
		Disruptive: true,
		DisruptionNote: "turning it off stops translating established masqueraded connections; turning it on " +
			"changes the source address of new ones: connections leaving the cluster break",
	},
	{
		Name: KeyHostLegacyRouting, Type: TypeOptionalBool, Default: "",
		Allowed: `"true", "false" or "" (unset)`,
		Help: "true: force legacy host routing (kernel routing + netfilter); false: require BPF host routing " +
			"and refuse to start without it; unset: BPF host routing wherever its requirements hold",
		Disruptive: false,
		DisruptionNote: "host routing changes only the path between pods and the node's device; connections without " +
			"NAT survive (netfilter conntrack picks up mid-flow TCP packets while net.netfilter.nf_conntrack_tcp_loose=1, " +
			"the default); NAT changes are covered by enable-bpf-masquerade",
	},
	{
		Name: KeyLBAlgorithm, Type: TypeEnum, Default: "random", Enum: []string{"random", "maglev"},
		Help:           "backend selection for new connections to Services (kube-proxy-replacement=true)",
		Disruptive:     false,
		DisruptionNote: "applies to new connections; established ones keep their backend through the pinned conntrack map",
	},
	{
		Name: KeyLBMapMax, Type: TypeInt, Default: "65536", Min: 1, Max: 1 << 20,
		Help:       "entries of the BPF service, backend and affinity maps (the two backend-slot maps get four times as many)",
		Disruptive: true,
		DisruptionNote: "the pinned service maps are recreated empty with the new size when the agent restarts (its log says " +
			"so) and the agent writes every Service into them again at once; new connections to Services fail until it " +
			"has, established ones keep their backend through the conntrack map",
	},
	{
		Name: KeyCTMapMax, Type: TypeInt, Default: "131072", Min: 1 << 10, Max: 1 << 24,
		Help:       "entries of the BPF connection-tracking map",
		Disruptive: true,
		DisruptionNote: "the pinned conntrack map is recreated empty with the new size: established connections " +
			"to Services lose their backend selection and reverse translation",
	},
	{
		Name: KeyNATMapMax, Type: TypeInt, Default: "131072", Min: 1 << 10, Max: 1 << 24,
		Help:       "entries of the BPF masquerade (NAT) map",
		Disruptive: true,
		DisruptionNote: "the pinned NAT map is recreated empty with the new size: established BPF-masqueraded " +
			"connections to the outside break",
	},
	{
		Name: KeyClusterCIDR, Type: TypeCIDR, Default: "198.19.0.0/16",
		Help:       "the cluster's pod address range; traffic from it to outside is masqueraded",
		Disruptive: true,
		DisruptionNote: "running pods keep addresses from the old range, which the node may no longer route or " +
			"masquerade: every node must agree, recreate pods after the change",
	},
	{
		Name: KeyServiceCIDR, Type: TypeCIDR, Default: "198.18.128.0/17",
		Help: "the cluster's Service (ClusterIP) range, as kube-apiserver's --service-cluster-ip-range; it must not overlap " +
			"the pod range, and the agent warns about (and glia status counts) Services whose ClusterIP lies outside it",
		Disruptive:     false,
		DisruptionNote: "only the check of ClusterIPs against the range changes; every Service is load-balanced either way",
	},
	{
		Name: KeyHealthPort, Type: TypeInt, Default: "4240", Min: 1, Max: 65535,
		Help:           "TCP port of the node health endpoint probed by other nodes",
		DisruptionNote: "only health probes change; other nodes report this node unreachable until they use the same port",
	},
	{
		Name: KeyPrometheusServeAddr, Type: TypeAddr, Default: ":9962",
		Allowed:        `a listen address "[host]:port", or "" to disable metrics`,
		Help:           "address the Prometheus metrics endpoint listens on",
		DisruptionNote: "only the metrics endpoint moves",
	},
	{
		Name: KeyMTU, Type: TypeInt, Default: "0", Min: 576, Max: 65535, ZeroAllowed: true,
		Allowed:        "0 (derive from the node's device) or 576..65535",
		Help:           "MTU of pod interfaces",
		DisruptionNote: "applies to pods created after the restart; running pods keep their MTU",
	},
	{
		Name: KeyDebug, Type: TypeBool, Default: "false",
		Help:           "log at debug level (set once the agent has resolved its config)",
		DisruptionNote: "only logging changes",
	},
}

var keyIndex = func() map[string]int {
	m := make(map[string]int, len(keys))
	for i := range keys {
		keys[i].RequiresRestart = true
		if keys[i].Allowed == "" {
			keys[i].Allowed = keys[i].defaultAllowed()
		}
		m[keys[i].Name] = i
	}
	return m
}()

// Keys returns every config key, sorted by name.
func Keys() []Key {
	out := make([]Key, len(keys))
	copy(out, keys)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupKey returns the key called name.
func LookupKey(name string) (Key, bool) {
	i, ok := keyIndex[name]
	if !ok {
		return Key{}, false
	}
	return keys[i], true
}

func keyNames() []string {
	names := make([]string, 0, len(keys))
	for _, k := range keys {
		names = append(names, k.Name)
	}
	sort.Strings(names)
	return names
}

func (k Key) defaultAllowed() string {
	switch k.Type {
	case TypeBool:
		return `"true" or "false"`
	case TypeOptionalBool:
		return `"true", "false" or ""`
	case TypeEnum:
		q := make([]string, len(k.Enum))
		for i, e := range k.Enum {
			q[i] = strconv.Quote(e)
		}
		if len(q) == 1 {
			return q[0]
		}
		return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
	case TypeInt:
		if k.ZeroAllowed {
			return fmt.Sprintf("0 or an integer from %d to %d", k.Min, k.Max)
		}
		return fmt.Sprintf("an integer from %d to %d", k.Min, k.Max)
	case TypeCIDR:
		return `an IPv4 CIDR such as "198.19.0.0/16"`
	case TypeAddr:
		return `a listen address "[host]:port"`
	}
	return ""
}

// check validates raw for the key and returns its canonical form. The
// error says what is wrong and what is allowed, without naming key or
// source (the caller adds them).
func (k Key) check(raw string) (string, error) {
	v := strings.TrimSpace(raw)
	switch k.Type {
	case TypeBool, TypeOptionalBool:
		if v == "" && k.Type == TypeOptionalBool {
			return "", nil
		}
		if v == "true" || v == "false" {
			return v, nil
		}
		hint := ""
		if k.Name == KeyKubeProxyReplacement {
			switch v {
			case "strict":
				hint = ` ("strict" is Cilium's pre-1.14 spelling of "true")`
			case "disabled":
				hint = ` ("disabled" is Cilium's pre-1.14 spelling of "false")`
			case "partial", "probe":
				hint = fmt.Sprintf(" (Cilium's pre-1.14 %q mode does not exist in glia)", v)
			}
		}
		return "", fmt.Errorf("is not a boolean: use %s%s", k.Allowed, hint)
	case TypeEnum:
		for _, e := range k.Enum {
			if v == e {
				return v, nil
			}
		}
		return "", fmt.Errorf("is not allowed: use %s", k.Allowed)
	case TypeInt:
		n, err := strconv.Atoi(v)
		if err != nil {
			return "", fmt.Errorf("is not an integer: use %s", k.Allowed)
		}
		if (n == 0 && k.ZeroAllowed) || (n >= k.Min && n <= k.Max) {
			return strconv.Itoa(n), nil
		}
		return "", fmt.Errorf("is out of range: use %s", k.Allowed)
	case TypeCIDR:
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is4() {
			return "", fmt.Errorf("is not an IPv4 CIDR: use %s", k.Allowed)
		}
		if p != p.Masked() {
			return "", fmt.Errorf("has host bits set: use %q", p.Masked().String())
		}
		return p.String(), nil
	case TypeAddr:
		if v == "" {
			return "", nil
		}
		host, port, err := net.SplitHostPort(v)
		if err != nil {
			return "", fmt.Errorf("is not a listen address: use %s", k.Allowed)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("has no valid port (1..65535): use %s", k.Allowed)
		}
		if host != "" && host != "localhost" {
			if _, err := netip.ParseAddr(host); err != nil {
				return "", fmt.Errorf("has a host that is not an IP address: use %s", k.Allowed)
			}
		}
		return v, nil
	}
	return "", fmt.Errorf("has unknown type %q", k.Type)
}

// suggest returns the known key closest to name by edit distance, or "" when
// none is close.
func suggest(name string) string {
	best, bestD := "", -1
	for _, k := range keyNames() {
		d := levenshtein(name, k)
		if bestD < 0 || d < bestD {
			best, bestD = k, d
		}
	}
	if bestD > max(2, len(name)/3) {
		return ""
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
