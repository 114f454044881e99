package config

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Source kinds, lowest precedence first.
const (
	SourceDefault    = "default"
	SourceFlag       = "flag"
	SourceConfigMap  = "configmap"
	SourceNodeConfig = "nodeconfig"
)

// DefaultConfigMapName is the ConfigMap the agent reads in its namespace.
const DefaultConfigMapName = "glia-config"

// Source is where a config value came from.
type Source struct {
	Kind string // SourceDefault, SourceFlag, SourceConfigMap or SourceNodeConfig
	// Name: the flag ("--mtu"), or the object as namespace/name.
	Name string
}

// String is the human form used in status, logs and errors, e.g.
// "ConfigMap glia-system/glia-config" or "GliaNodeConfig glia-system/x".
func (s Source) String() string {
	switch s.Kind {
	case SourceDefault:
		return "default"
	case SourceFlag:
		return "flag " + s.Name
	case SourceConfigMap:
		return "ConfigMap " + s.Name
	case SourceNodeConfig:
		return "GliaNodeConfig " + s.Name
	}
	return s.Kind + " " + s.Name
}

// Value is one effective key: its value in canonical form (trimmed; ints
// without leading zeros; CIDRs as netip prints them), the source that set
// it, and the lower-precedence sources it overrode (lowest first, defaults
// not listed).
type Value struct {
	Raw        string
	Source     Source
	Overridden []Source
}

// NodeConfig is a GliaNodeConfig: config defaults for the nodes its
// selector matches.
type NodeConfig struct {
	Namespace string
	Name      string
	// Selector follows Kubernetes semantics: an empty selector matches
	// every node.
	Selector metav1.LabelSelector
	Defaults map[string]string
}

// FullName is namespace/name, or name when the namespace is empty.
func (nc NodeConfig) FullName() string {
	if nc.Namespace == "" {
		return nc.Name
	}
	return nc.Namespace + "/" + nc.Name
}

func (nc NodeConfig) source() Source { return Source{Kind: SourceNodeConfig, Name: nc.FullName()} }

// Matches reports whether the node config selects a node with these labels.
func (nc NodeConfig) Matches(nodeLabels map[string]string) (bool, error) {
	sel, err := metav1.LabelSelectorAsSelector(&nc.Selector)
	if err != nil {
		return false, fmt.Errorf("GliaNodeConfig %s: invalid spec.nodeSelector: %w", nc.FullName(), err)
	}
	return sel.Matches(labels.Set(nodeLabels)), nil
}

// MatchingNodeConfigs returns the node configs that select a node with
// nodeLabels, in precedence order (by name, later wins). Errors name every
// node config whose selector is invalid.
func MatchingNodeConfigs(configs []NodeConfig, nodeLabels map[string]string) ([]NodeConfig, error) {
	sorted := sortedNodeConfigs(configs)
	var out []NodeConfig
	var errs []error
	for _, nc := range sorted {
		ok, err := nc.Matches(nodeLabels)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			out = append(out, nc)
		}
	}
	return out, errors.Join(errs...)
}

// UnmatchedNodeConfigs returns the full names of the node configs that
// select none of the nodes (given as their label sets), sorted. A node config
// that matches nothing is not an error, but usually a mistake worth telling
// (a wrong label, or the wrong namespace).
func UnmatchedNodeConfigs(configs []NodeConfig, nodes []map[string]string) ([]string, error) {
	var out []string
	var errs []error
	for _, nc := range sortedNodeConfigs(configs) {
		matched := false
		for _, l := range nodes {
			ok, err := nc.Matches(l)
			if err != nil {
				errs = append(errs, err)
				break
			}
			if ok {
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, nc.FullName())
		}
	}
	return out, errors.Join(errs...)
}

func sortedNodeConfigs(configs []NodeConfig) []NodeConfig {
	s := make([]NodeConfig, len(configs))
	copy(s, configs)
	sort.SliceStable(s, func(i, j int) bool {
		if s[i].Name != s[j].Name {
			return s[i].Name < s[j].Name
		}
		return s[i].Namespace < s[j].Namespace
	})
	return s
}

// Inputs are the raw config layers of one node.
type Inputs struct {
	// Flags holds the agent flags set explicitly (not their defaults),
	// keyed by config key.
	Flags map[string]string
	// ConfigMap is the data of ConfigMap glia-config; nil when absent.
	ConfigMap map[string]string
	// ConfigMapName names it as namespace/name in sources and errors;
	// DefaultConfigMapName when empty.
	ConfigMapName string
	// NodeConfigs are all GliaNodeConfigs of the agent's namespace; Resolve
	// applies those that match NodeLabels.
	NodeConfigs []NodeConfig
	NodeLabels  map[string]string
}

// Warning is a non-fatal finding of Resolve.
type Warning struct {
	Key     string
	Message string
}

func (w Warning) String() string { return w.Message }

// Config is a node's resolved, validated config. The zero value is not
// usable; get one from Resolve or Defaults.
type Config struct {
	values map[string]Value
}

// Defaults is the config with every key at its built-in default.
func Defaults() *Config {
	c, _, err := Resolve(Inputs{})
	if err != nil {
		panic("config: built-in defaults do not validate: " + err.Error())
	}
	return c
}

// Resolve layers the inputs (defaults < flags < ConfigMap < matching node
// configs by name) and validates every value. All problems are returned at
// once, joined; the Config is nil when there is any. Warnings report the
// Cilium keys a source sets that glia ignores (a Cilium key whose value asks
// for what glia cannot do is an error saying why) and keys set by more
// than one matching node config.
func Resolve(in Inputs) (*Config, []Warning, error) {
	var errs []error
	c := &Config{values: make(map[string]Value, len(keys))}
	for _, k := range keys {
		c.values[k.Name] = Value{Raw: k.Default, Source: Source{Kind: SourceDefault}}
	}

	// Cilium keys glia does not implement and ignores, by source, in the
	// order the sources apply.
	ignored := map[Source][]string{}
	var sources []Source
	apply := func(src Source, data map[string]string) map[string]bool {
		sources = append(sources, src)
		set := map[string]bool{}
		for _, name := range sortedKeys(data) {
			raw := data[name]
			k, ok := LookupKey(name)
			if !ok {
				cilium, refusal := lookupCilium(name, raw)
				switch {
				case !cilium:
					errs = append(errs, unknownKeyError(name, src))
				case refusal != "":
					errs = append(errs, fmt.Errorf("%s: %q (from %s), a Cilium key glia does not implement: %s", name, raw, src, refusal))
				default:
					ignored[src] = append(ignored[src], name)
				}
				continue
			}
			canon, err := k.check(raw)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q (from %s) %w", name, raw, src, err))
				continue
			}
			old := c.values[name]
			v := Value{Raw: canon, Source: src}
			if old.Source.Kind != SourceDefault {
				v.Overridden = append(append([]Source{}, old.Overridden...), old.Source)
			}
			c.values[name] = v
			set[name] = true
		}
		return set
	}

	flags := map[string]string{}
	for k, v := range in.Flags {
		flags[strings.TrimPrefix(k, "--")] = v
	}
	for _, name := range sortedKeys(flags) {
		apply(Source{Kind: SourceFlag, Name: "--" + name}, map[string]string{name: flags[name]})
	}

	cmName := in.ConfigMapName
	if cmName == "" {
		cmName = DefaultConfigMapName
	}
	if in.ConfigMap != nil {
		apply(Source{Kind: SourceConfigMap, Name: cmName}, in.ConfigMap)
	}

	matching, err := MatchingNodeConfigs(in.NodeConfigs, in.NodeLabels)
	if err != nil {
		errs = append(errs, err)
	}
	setBy := map[string][]NodeConfig{}
	for _, nc := range matching {
		for name := range apply(nc.source(), nc.Defaults) {
			setBy[name] = append(setBy[name], nc)
		}
	}
	var warnings []Warning
	for _, src := range sources {
		if names := ignored[src]; len(names) > 0 {
			warnings = append(warnings, Warning{
				Key: strings.Join(names, ","),
				Message: fmt.Sprintf("%s sets Cilium keys glia does not implement, ignored: %s",
					src, strings.Join(names, ", ")),
			})
			delete(ignored, src) // a source applied twice warns once
		}
	}
	for _, name := range sortedKeys(setBy) {
		ncs := setBy[name]
		if len(ncs) < 2 {
			continue
		}
		parts := make([]string, len(ncs))
		for i, nc := range ncs {
			parts[i] = fmt.Sprintf("GliaNodeConfig %s (%q)", nc.FullName(), strings.TrimSpace(nc.Defaults[name]))
		}
		winner := ncs[len(ncs)-1]
		warnings = append(warnings, Warning{
			Key: name,
			Message: fmt.Sprintf("%s is set by %s, which all select this node; %s wins (later by name)",
				name, joinAnd(parts), winner.FullName()),
		})
	}

	if len(errs) == 0 {
		errs = append(errs, c.crossCheck()...)
	}
	if len(errs) > 0 {
		return nil, warnings, errors.Join(errs...)
	}
	return c, warnings, nil
}

// crossCheck validates relations between keys.
func (c *Config) crossCheck() []error {
	var errs []error
	cluster := netip.MustParsePrefix(c.values[KeyClusterCIDR].Raw)
	svc := netip.MustParsePrefix(c.values[KeyServiceCIDR].Raw)
	if cluster.Overlaps(svc) {
		errs = append(errs, fmt.Errorf("%s %s (from %s) overlaps %s %s (from %s): pod and Service ranges must be disjoint",
			KeyClusterCIDR, cluster, c.values[KeyClusterCIDR].Source, KeyServiceCIDR, svc, c.values[KeyServiceCIDR].Source))
	}
	return errs
}

func unknownKeyError(name string, src Source) error {
	hint := ""
	if s := suggest(name); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	return fmt.Errorf("unknown config key %q in %s%s: known keys are %s", name, src, hint, strings.Join(keyNames(), ", "))
}

func joinAnd(parts []string) string {
	switch len(parts) {
	case 0:
		return ""
	case 1:
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Get returns the effective value of key.
func (c *Config) Get(key string) (Value, bool) {
	v, ok := c.values[key]
	return v, ok
}

// String returns the value of key ("" for unknown keys).
func (c *Config) String(key string) string { return c.values[key].Raw }

// Bool returns the value of a boolean key; false when unset or unknown.
func (c *Config) Bool(key string) bool { return c.values[key].Raw == "true" }

// Int returns the value of an integer key; 0 when unknown.
func (c *Config) Int(key string) int {
	n, _ := strconv.Atoi(c.values[key].Raw)
	return n
}

// OptionalBool returns nil when the key is unset ("").
func (c *Config) OptionalBool(key string) *bool {
	switch c.values[key].Raw {
	case "true":
		t := true
		return &t
	case "false":
		f := false
		return &f
	}
	return nil
}

// Source returns the source of key's value.
func (c *Config) Source(key string) Source { return c.values[key].Source }

// Row is one line of Table.
type Row struct {
	Key        string
	Value      string
	Source     Source
	Overridden []Source
}

// Table lists every key with its value and source, sorted by key, for
// `glia config view` and the status' config sources.
func (c *Config) Table() []Row {
	rows := make([]Row, 0, len(c.values))
	for _, name := range sortedKeys(c.values) {
		v := c.values[name]
		rows = append(rows, Row{Key: name, Value: v.Raw, Source: v.Source, Overridden: v.Overridden})
	}
	return rows
}

// Resolved is the config as typed fields, one per key (the tag names it).
// Every field must be read by the agent somewhere: TestEveryKeyHasAConsumer
// fails for a key nothing reads.
type Resolved struct {
	RoutingMode          string       `key:"routing-mode"`
	AutoDirectNodeRoutes bool         `key:"auto-direct-node-routes"`
	TunnelProtocol       string       `key:"tunnel-protocol"`
	KubeProxyReplacement bool         `key:"kube-proxy-replacement"`
	BPFMasquerade        bool         `key:"enable-bpf-masquerade"`
	IPv4Masquerade       bool         `key:"enable-ipv4-masquerade"`
	HostLegacyRouting    *bool        `key:"enable-host-legacy-routing"` // nil: unset
	LBAlgorithm          string       `key:"bpf-lb-algorithm"`
	LBMapMax             int          `key:"bpf-lb-map-max"`
	CTMapMax             int          `key:"bpf-ct-map-max"`
	NATMapMax            int          `key:"bpf-nat-map-max"`
	ClusterCIDR          netip.Prefix `key:"cluster-pool-ipv4-cidr"`
	ServiceCIDR          netip.Prefix `key:"service-cidr"`
	HealthPort           int          `key:"health-port"`
	PrometheusServeAddr  string       `key:"prometheus-serve-addr"` // "": metrics disabled
	MTU                  int          `key:"mtu"`                   // 0: derive from the node's device
	Debug                bool         `key:"debug"`
	// Sources says where each key came from, for messages; may be nil
	// when a Resolved is built by hand.
	Sources map[string]Source
}

// Typed returns the config as typed fields.
func (c *Config) Typed() Resolved {
	r := Resolved{
		RoutingMode:          c.String(KeyRoutingMode),
		AutoDirectNodeRoutes: c.Bool(KeyAutoDirectNodeRoutes),
		TunnelProtocol:       c.String(KeyTunnelProtocol),
		KubeProxyReplacement: c.Bool(KeyKubeProxyReplacement),
		BPFMasquerade:        c.Bool(KeyBPFMasquerade),
		IPv4Masquerade:       c.Bool(KeyIPv4Masquerade),
		HostLegacyRouting:    c.OptionalBool(KeyHostLegacyRouting),
		LBAlgorithm:          c.String(KeyLBAlgorithm),
		LBMapMax:             c.Int(KeyLBMapMax),
		CTMapMax:             c.Int(KeyCTMapMax),
		NATMapMax:            c.Int(KeyNATMapMax),
		ClusterCIDR:          netip.MustParsePrefix(c.String(KeyClusterCIDR)),
		ServiceCIDR:          netip.MustParsePrefix(c.String(KeyServiceCIDR)),
		HealthPort:           c.Int(KeyHealthPort),
		PrometheusServeAddr:  c.String(KeyPrometheusServeAddr),
		MTU:                  c.Int(KeyMTU),
		Debug:                c.Bool(KeyDebug),
		Sources:              make(map[string]Source, len(c.values)),
	}
	for name, v := range c.values {
		r.Sources[name] = v.Source
	}
	return r
}

// Report is what an agent says about its config: the inputs it resolved at
// start and the kernel it probed. Resolving Inputs again gives its Config.
type Report struct {
	Node   string      `json:"node"`
	Inputs Inputs      `json:"inputs"`
	Probe  KernelProbe `json:"probe"`
}
