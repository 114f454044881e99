package status

import (
	"fmt"
	"slices"
	"strings"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
)

// ConfigSources lists every key of c with its value and source, sorted by
// key, as api.Status.ConfigSources.
func ConfigSources(c *config.Config) []api.ConfigSource {
	rows := c.Table()
	out := make([]api.ConfigSource, 0, len(rows))
	for _, row := range rows {
		cs := api.ConfigSource{Key: row.Key, Value: row.Value, Source: row.Source.String(), Kind: row.Source.Kind}
		for _, o := range row.Overridden {
			cs.Overridden = append(cs.Overridden, o.String())
		}
		out = append(out, cs)
	}
	return out
}

// FromConfig fills the parts of s that follow from the resolved config c,
// its resolution warnings and the datapath modes m decided for this node:
// KubeProxyReplacement (without devices), HostRouting, Masquerading (mode
// and families; the agent adds device and CIDR), Routing, ConfigSources and
// ConfigWarnings.
func FromConfig(s *api.Status, c *config.Config, warnings []config.Warning, m config.Modes) {
	kprSrc := c.Source(config.KeyKubeProxyReplacement)
	s.KubeProxyReplacement.Enabled = m.KubeProxyReplacement
	s.KubeProxyReplacement.Reason = fmt.Sprintf("%s=%t (from %s)", config.KeyKubeProxyReplacement, m.KubeProxyReplacement, kprSrc)
	s.HostRouting = api.HostRoutingStatus{
		Mode:        m.HostRouting.Mode,
		Reason:      m.HostRouting.Reason,
		BlockingKey: m.HostRouting.BlockingKey,
		Fix:         m.HostRouting.Fix,
	}
	s.Masquerading.Mode = m.Masquerading
	s.Masquerading.IPv4 = m.Masquerading != config.MasqDisabled
	s.Routing = api.RoutingStatus{
		Mode:                 m.RoutingMode,
		AutoDirectNodeRoutes: m.AutoDirectNodeRoutes,
		TunnelProtocol:       m.TunnelProtocol,
	}
	s.ConfigSources = ConfigSources(c)
	s.ConfigWarnings = nil
	for _, w := range warnings {
		s.ConfigWarnings = append(s.ConfigWarnings, w.Message)
	}
}

// Pending compares the config the agent runs (current) with what its
// sources resolve to now (in, as read by the agent's config watch; readErr
// is the error reading them, e.g. a GliaNodeConfig that does not parse).
// It returns nil when nothing would change at restart; otherwise the keys
// that would change, or the reason the new sources would not resolve (the
// agent would refuse to start on them). Since is left for the caller.
func Pending(current *config.Config, in config.Inputs, readErr error) *api.ConfigPending {
	if readErr != nil {
		return &api.ConfigPending{Error: readErr.Error()}
	}
	proposed, _, err := config.Resolve(in)
	if err != nil {
		return &api.ConfigPending{Error: err.Error()}
	}
	changes := config.Diff(current, proposed)
	if len(changes) == 0 {
		return nil
	}
	p := &api.ConfigPending{}
	for _, c := range changes {
		p.Changes = append(p.Changes, api.PendingChange{Key: c.Key, From: c.From, To: c.To,
			Source: c.ToSource.String(), Disruptive: c.Disruptive})
	}
	return p
}

// SamePending reports whether a and b name the same pending changes (or
// the same error), Since aside.
func SamePending(a, b *api.ConfigPending) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Error == b.Error && slices.Equal(a.Changes, b.Changes)
}

// PendingSummary is the one-line form of p used by `glia status`, the
// agent's log and its Node condition, e.g. "enable-bpf-masquerade
// false→true (GliaNodeConfig glia-system/x), restart the agent pod to
// apply"; "none" for nil.
func PendingSummary(p *api.ConfigPending) string {
	if p == nil {
		return "none"
	}
	if p.Error != "" {
		return "error: the config sources no longer resolve, the agent would refuse to restart on them (it runs its current config meanwhile): " +
			strings.ReplaceAll(p.Error, "\n", "; ")
	}
	parts := make([]string, len(p.Changes))
	for i, c := range p.Changes {
		from, to := c.From, c.To
		if from == "" {
			from = `""`
		}
		if to == "" {
			to = `""`
		}
		parts[i] = fmt.Sprintf("%s %s→%s (%s)", c.Key, from, to, c.Source)
	}
	return strings.Join(parts, ", ") + ", restart the agent pod to apply"
}
