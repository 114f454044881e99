package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// KernelProbe is what the running kernel supports, as probed by the
// datapath at start.
type KernelProbe struct {
	TCX              bool // tcx attach (falls back to tc when absent)
	BPFRedirectPeer  bool // bpf_redirect_peer helper
	BPFRedirectNeigh bool // bpf_redirect_neigh helper
	FIBLookup        bool // bpf_fib_lookup helper
	VXLAN            bool // the vxlan link type
	KernelVersion    string
}

// Host routing modes.
const (
	HostRoutingBPF    = "BPF"
	HostRoutingLegacy = "Legacy"
)

// Datapath implementations, as Modes.Datapath names them.
const (
	DatapathLegacy = "legacy"
	DatapathBPF    = "bpf"
)

// Masquerading modes.
const (
	MasqBPF      = "BPF"
	MasqIPTables = "IPTables"
	MasqDisabled = "Disabled"
)

// HostRouting is the host-routing decision and why.
type HostRouting struct {
	Mode   string // HostRoutingBPF or HostRoutingLegacy
	Reason string
	// BlockingKey is the first config key that keeps BPF host routing off
	// ("" when BPF is on, or when only the kernel blocks it).
	BlockingKey string
	// Fix is the change that would give BPF host routing ("" when on).
	Fix string
}

// Message is the one-line form for logs: the reason and, if any, the fix.
func (h HostRouting) Message() string {
	if h.Fix == "" {
		return h.Reason
	}
	return h.Reason + ". Fix: " + h.Fix
}

// Modes is the datapath a node runs given its config and kernel.
type Modes struct {
	RoutingMode          string
	AutoDirectNodeRoutes bool
	TunnelProtocol       string
	KubeProxyReplacement bool
	HostRouting          HostRouting
	Masquerading         string // MasqBPF, MasqIPTables or MasqDisabled
	// Datapath is the implementation that runs these modes: the legacy
	// datapath (kernel routing + iptables) carries native routing with
	// kube-proxy, iptables masquerading and legacy host routing; anything
	// else needs the eBPF datapath.
	Datapath string
	// Errors are explicit requests that cannot be honoured on this node.
	// The agent must refuse to start when there is any: a requested
	// feature never silently falls back.
	Errors []string
}

// Err joins Errors; nil when there are none.
func (m Modes) Err() error {
	errs := make([]error, len(m.Errors))
	for i, e := range m.Errors {
		errs[i] = errors.New(e)
	}
	return errors.Join(errs...)
}

type requirement struct {
	key  string // config key that must change, "" for a kernel requirement
	text string // what is required, with the current state
	fix  string
}

// Decide applies the fallback rules:
//
//   - BPF host routing requires kube-proxy-replacement=true,
//     enable-bpf-masquerade=true (when enable-ipv4-masquerade=true) and the
//     kernel helpers bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup.
//   - enable-host-legacy-routing=true forces Legacy.
//   - enable-host-legacy-routing unset: BPF where the requirements hold,
//     else Legacy, with the blocking key and the fix.
//   - enable-host-legacy-routing=false with a requirement missing: an error.
//   - enable-bpf-masquerade=true without bpf_fib_lookup, and
//     routing-mode=tunnel without VXLAN: errors, never a silent fallback.
func Decide(r Resolved, k KernelProbe) Modes {
	m := Modes{
		RoutingMode:          r.RoutingMode,
		AutoDirectNodeRoutes: r.AutoDirectNodeRoutes,
		KubeProxyReplacement: r.KubeProxyReplacement,
	}
	src := func(key string) string {
		if s, ok := r.Sources[key]; ok {
			return s.String()
		}
		return "unknown source"
	}
	kernel := k.KernelVersion
	if kernel == "" {
		kernel = "this kernel"
	} else {
		kernel = "kernel " + kernel
	}

	if r.RoutingMode == "tunnel" {
		m.TunnelProtocol = r.TunnelProtocol
		if !k.VXLAN {
			m.Errors = append(m.Errors, fmt.Sprintf(
				"%s=tunnel (from %s) cannot be honoured: %s has no vxlan support (load the vxlan module, or set %s: \"native\")",
				KeyRoutingMode, src(KeyRoutingMode), kernel, KeyRoutingMode))
		}
	}

	switch {
	case !r.IPv4Masquerade:
		m.Masquerading = MasqDisabled
	case r.BPFMasquerade:
		m.Masquerading = MasqBPF
		if !k.FIBLookup {
			m.Errors = append(m.Errors, fmt.Sprintf(
				"%s=true (from %s) cannot be honoured: %s lacks the bpf_fib_lookup helper that BPF masquerading needs "+
					"(run a kernel with it, 4.18 or later, or set %s: \"false\" to masquerade with iptables)",
				KeyBPFMasquerade, src(KeyBPFMasquerade), kernel, KeyBPFMasquerade))
		}
	default:
		m.Masquerading = MasqIPTables
	}

	var unmet []requirement
	if !r.KubeProxyReplacement {
		unmet = append(unmet, requirement{
			key:  KeyKubeProxyReplacement,
			text: fmt.Sprintf("%s=true (currently false, from %s)", KeyKubeProxyReplacement, src(KeyKubeProxyReplacement)),
			fix:  fmt.Sprintf("set %s: \"true\"", KeyKubeProxyReplacement),
		})
	}
	if r.IPv4Masquerade && !r.BPFMasquerade {
		unmet = append(unmet, requirement{
			key:  KeyBPFMasquerade,
			text: fmt.Sprintf("%s=true (currently false, from %s)", KeyBPFMasquerade, src(KeyBPFMasquerade)),
			fix:  fmt.Sprintf("set %s: \"true\"", KeyBPFMasquerade),
		})
	}
	var missing []string
	if !k.BPFRedirectPeer {
		missing = append(missing, "bpf_redirect_peer")
	}
	if !k.BPFRedirectNeigh {
		missing = append(missing, "bpf_redirect_neigh")
	}
	if !k.FIBLookup {
		missing = append(missing, "bpf_fib_lookup")
	}
	if len(missing) > 0 {
		unmet = append(unmet, requirement{
			text: fmt.Sprintf("the kernel %s %s (missing in %s)", plural(len(missing), "helper"), joinAnd(missing), kernel),
			fix:  "run a kernel that has " + joinAnd(missing) + " (5.10 or later)",
		})
	}
	texts := make([]string, 0, len(unmet))
	var cfgFixes, kernelFixes []string
	blocking := ""
	for _, u := range unmet {
		texts = append(texts, u.text)
		if u.key == "" {
			kernelFixes = append(kernelFixes, u.fix)
			continue
		}
		cfgFixes = append(cfgFixes, u.fix)
		if blocking == "" {
			blocking = u.key
		}
	}
	requires := "BPF host routing requires " + joinAnd(texts)
	var fixParts []string
	if len(cfgFixes) > 0 {
		fixParts = append(fixParts, joinAnd(cfgFixes)+" in ConfigMap glia-config or in a GliaNodeConfig selecting this node, then restart the agent")
	}
	fixParts = append(fixParts, kernelFixes...)
	fix := strings.Join(fixParts, "; ")

	legacy := r.HostLegacyRouting
	switch {
	case legacy != nil && *legacy:
		m.HostRouting = HostRouting{
			Mode:        HostRoutingLegacy,
			Reason:      fmt.Sprintf("forced by %s=true (from %s)", KeyHostLegacyRouting, src(KeyHostLegacyRouting)),
			BlockingKey: KeyHostLegacyRouting,
			Fix:         fmt.Sprintf("remove %s", KeyHostLegacyRouting),
		}
		if len(unmet) > 0 {
			m.HostRouting.Fix += "; " + requires + ": " + fix
		}
	case len(unmet) == 0:
		m.HostRouting = HostRouting{
			Mode:   HostRoutingBPF,
			Reason: "kube-proxy-replacement, BPF masquerading and the kernel helpers bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup are available",
		}
		if !r.IPv4Masquerade {
			m.HostRouting.Reason = "kube-proxy-replacement and the kernel helpers bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup are available (masquerading is disabled)"
		}
		if legacy != nil {
			m.HostRouting.Reason = fmt.Sprintf("requested by %s=false (from %s); %s",
				KeyHostLegacyRouting, src(KeyHostLegacyRouting), m.HostRouting.Reason)
		}
	default:
		m.HostRouting = HostRouting{
			Mode:        HostRoutingLegacy,
			Reason:      requires + "; falling back to legacy host routing",
			BlockingKey: blocking,
			Fix:         fix,
		}
		if legacy != nil { // explicitly false: the request cannot be honoured
			m.HostRouting.Reason = requires
			m.Errors = append(m.Errors, fmt.Sprintf(
				"%s=false (from %s) requests BPF host routing, which cannot be honoured: %s. Fix: %s; or remove %s to fall back to legacy host routing",
				KeyHostLegacyRouting, src(KeyHostLegacyRouting), requires, fix, KeyHostLegacyRouting))
		}
	}
	m.Datapath = DatapathBPF
	if !m.KubeProxyReplacement && m.Masquerading != MasqBPF && m.HostRouting.Mode != HostRoutingBPF && m.RoutingMode == "native" {
		m.Datapath = DatapathLegacy
	}
	return m
}

// DiffModes describes how the datapath would change from cur to next, one
// line per changed aspect, e.g. "Host Routing: Legacy -> BPF".
func DiffModes(cur, next Modes) []string {
	var out []string
	add := func(what, a, b string) {
		if a != b {
			out = append(out, fmt.Sprintf("%s: %s -> %s", what, a, b))
		}
	}
	add("KubeProxyReplacement", boolWord(cur.KubeProxyReplacement), boolWord(next.KubeProxyReplacement))
	add("Host Routing", cur.HostRouting.Mode, next.HostRouting.Mode)
	add("Masquerading", cur.Masquerading, next.Masquerading)
	add("Routing", routingWord(cur), routingWord(next))
	add("Auto direct node routes", strconv.FormatBool(cur.AutoDirectNodeRoutes), strconv.FormatBool(next.AutoDirectNodeRoutes))
	return out
}

func boolWord(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func routingWord(m Modes) string {
	if m.RoutingMode == "tunnel" {
		return "Tunnel [" + m.TunnelProtocol + "]"
	}
	if m.RoutingMode == "" {
		return ""
	}
	return strings.ToUpper(m.RoutingMode[:1]) + m.RoutingMode[1:]
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
