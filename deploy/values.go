package deploy

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"glia.dev/glia/internal/config"
)

// ValueMapping says which chart value renders a glia config key into
// ConfigMap glia-config.
type ValueMapping struct {
	Key string // the config key, e.g. "enable-bpf-masquerade"
	// Value is the chart value's path, dotted: "bpf.masquerade", or
	// "extraConfig.<key>" for a key without a named value.
	Value string
	// encode turns the key's canonical config value into the value's type.
	encode func(canon string) any
}

func asString(s string) any { return s }

func asBool(s string) any { return s == "true" }

// asOptionalBool: "" (unset) is null, which removes the value.
func asOptionalBool(s string) any {
	if s == "" {
		return nil
	}
	return s == "true"
}

func asInt(s string) any {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(fmt.Sprintf("deploy: canonical int %q does not parse: %v", s, err))
	}
	return n
}

func asList(s string) any { return []string{s} }

// named lists the keys with a named chart value (as Cilium names it where
// Cilium has one). The others go through extraConfig.
var named = []ValueMapping{
	{config.KeyAutoDirectNodeRoutes, "autoDirectNodeRoutes", asBool},
	{config.KeyCTMapMax, "bpf.ctMapMax", asInt},
	{config.KeyLBAlgorithm, "loadBalancer.algorithm", asString},
	{config.KeyLBMapMax, "bpf.lbMapMax", asInt},
	{config.KeyNATMapMax, "bpf.natMax", asInt},
	{config.KeyClusterCIDR, "ipam.operator.clusterPoolIPv4PodCIDRList", asList},
	{config.KeyDebug, "debug.enabled", asBool},
	{config.KeyBPFMasquerade, "bpf.masquerade", asBool},
	{config.KeyHostLegacyRouting, "bpf.hostLegacyRouting", asOptionalBool},
	{config.KeyIPv4Masquerade, "enableIPv4Masquerade", asBool},
	{config.KeyHealthPort, "clusterHealthPort", asInt},
	{config.KeyKubeProxyReplacement, "kubeProxyReplacement", asBool},
	{config.KeyMTU, "MTU", asInt},
	{config.KeyRoutingMode, "routingMode", asString},
	{config.KeyTunnelProtocol, "tunnelProtocol", asString},
	// prometheus-serve-addr is rendered from prometheus.enabled and
	// prometheus.port (":port" or ""); any other address ("host:port")
	// needs the raw key, so the key maps to extraConfig.
}

// ValueMappings returns the mapping of every config key, sorted by key:
// the named value, or extraConfig.<key>.
func ValueMappings() []ValueMapping {
	byKey := map[string]ValueMapping{}
	for _, m := range named {
		byKey[m.Key] = m
	}
	var out []ValueMapping
	for _, k := range config.Keys() {
		m, ok := byKey[k.Name]
		if !ok {
			m = ValueMapping{Key: k.Name, Value: "extraConfig." + k.Name, encode: asString}
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// ValueForKey returns the chart value that sets config key: its named value
// (ValueForKey("kube-proxy-replacement") == "kubeProxyReplacement"), or
// "extraConfig.<key>" for a key without one; "" for an unknown key.
func ValueForKey(key string) string {
	for _, m := range ValueMappings() {
		if m.Key == key {
			return m.Value
		}
	}
	return ""
}

// SetArgs translates config keys and values (as `glia lab up --set
// key=value` takes them) into helm arguments that set the chart values
// rendering them: "--set-json", "value.path=<JSON>", ... sorted by key.
// Every key and value is validated as the agent would (unknown keys,
// syntax, ranges, overlapping CIDRs), and the error names each problem.
func SetArgs(cfg map[string]string) ([]string, error) {
	c, _, err := config.Resolve(config.Inputs{ConfigMap: cfg, ConfigMapName: config.DefaultConfigMapName})
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	mappings := map[string]ValueMapping{}
	for _, m := range ValueMappings() {
		mappings[m.Key] = m
	}
	var args []string
	for _, k := range keys {
		m := mappings[k]
		b, err := json.Marshal(m.encode(c.String(k)))
		if err != nil {
			return nil, fmt.Errorf("encode %s for chart value %s: %w", k, m.Value, err)
		}
		args = append(args, "--set-json", m.Value+"="+string(b))
	}
	return args, nil
}
