package status

import (
	"fmt"

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
