// Package status renders the agent's api.Status the way `cilium status`
// does, line by line where the two share a concept ("Host Routing:",
// "Masquerading:", "Cluster health:" ...), so users of that tool can compare
// nodes at a glance and the lines they grep for match: "Label: value", one
// space after the colon and between fields, as the story's examples show
// (TestStoryLines pins them); and fills the datapath and config parts of a
// Status from a resolved config.
package status

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/version"
)

// Render writes s as text. verbose adds the reasons and fixes of every
// mode, every controller, every config key with its source, and the
// allocated addresses.
func Render(w io.Writer, s *api.Status, verbose bool) error {
	r := &renderer{s: s, verbose: verbose}
	r.kubernetes()
	r.readiness()
	r.kubeProxyReplacement()
	r.line("Node:", orUnknown(s.NodeName))
	r.line("Datapath:", orUnknown(s.Datapath))
	if s.Version != "" {
		r.line("Version:", s.Version, "(commit "+version.ShortCommit(orUnknown(s.Commit))+")")
	}
	r.line("Uptime:", fmtDuration(s.AgentUptime))
	r.ipam()
	r.line("Endpoints:", fmt.Sprint(s.Endpoints))
	r.services()
	r.routing()
	r.hostRouting()
	r.masquerading()
	r.policy()
	r.mapMigrations()
	r.reconcilers()
	r.controllers()
	r.configSources()
	r.clusterHealth()
	_, err := io.WriteString(w, r.b.String())
	return err
}

type renderer struct {
	s       *api.Status
	verbose bool
	b       strings.Builder
}

// line writes "Label:" and the non-empty fields, one space apart.
func (r *renderer) line(label string, fields ...string) {
	r.b.WriteString(label)
	for _, f := range fields {
		if f != "" {
			r.b.WriteString(" " + f)
		}
	}
	r.b.WriteString("\n")
}

// sub writes an indented detail line under the previous one.
func (r *renderer) sub(label string, fields ...string) { r.line("  "+label, fields...) }

// table writes indented rows aligned in columns.
func (r *renderer) table(rows [][]string) {
	tw := tabwriter.NewWriter(&r.b, 0, 0, 3, ' ', 0)
	for _, row := range rows {
		fmt.Fprintf(tw, "  %s\n", strings.Join(row, "\t"))
	}
	tw.Flush()
}

func (r *renderer) kubernetes() {
	k := r.s.Kubernetes
	switch k.State {
	case "Ok":
		r.line("Kubernetes:", "Ok", k.Version)
	case "":
		r.line("Kubernetes:", "Unknown")
	default:
		r.line("Kubernetes:", k.State)
	}
	if r.verbose && !k.LastSuccess.IsZero() {
		r.sub("Last answer:", r.ago(k.LastSuccess))
	}
}

// readiness is what the agent's readiness probe answers, with every
// failing check and why.
func (r *renderer) readiness() {
	if len(r.s.Readiness) == 0 {
		r.line("Readiness:", "Unknown")
		return
	}
	var failing []api.ReadinessCheck
	for _, c := range r.s.Readiness {
		if !c.OK {
			failing = append(failing, c)
		}
	}
	if len(failing) == 0 {
		r.line("Readiness:", "Ready")
		return
	}
	names := make([]string, len(failing))
	for i, c := range failing {
		names[i] = c.Name
	}
	r.line("Readiness:", "Not ready: "+strings.Join(names, ", "))
	for _, c := range failing {
		r.sub(c.Name+":", c.Message)
	}
}

func (r *renderer) kubeProxyReplacement() {
	k := r.s.KubeProxyReplacement
	if k.Enabled {
		devs := ""
		if len(k.Devices) > 0 {
			devs = "[" + strings.Join(k.Devices, ", ") + "]"
		}
		r.line("KubeProxyReplacement:", "True", devs)
	} else {
		r.line("KubeProxyReplacement:", "False", "[kube-proxy handles Services]")
	}
	if r.verbose && k.Reason != "" {
		r.sub("Reason:", k.Reason)
	}
}

func (r *renderer) ipam() {
	i := r.s.IPAM
	if i.PodCIDR == "" {
		r.line("IPAM:", "IPv4: no pod CIDR assigned yet")
	} else {
		r.line("IPAM:", fmt.Sprintf("IPv4: %d/%d allocated from %s", i.Allocated, i.Size, i.PodCIDR))
	}
	if r.verbose && len(i.Addresses) > 0 {
		r.b.WriteString("Allocated addresses:\n")
		for _, a := range i.Addresses {
			r.b.WriteString("  " + a + "\n")
		}
	}
}

func (r *renderer) routing() {
	rt := r.s.Routing
	network := "Unknown"
	switch rt.Mode {
	case "native":
		network = "Native"
	case "tunnel":
		network = "Tunnel"
		if rt.TunnelProtocol != "" {
			network += " [" + rt.TunnelProtocol + "]"
		}
	}
	r.line("Routing:", "Network: "+network, "Host: "+orUnknown(r.s.HostRouting.Mode))
	if r.verbose && rt.Mode == "native" {
		r.sub("Direct node routes:", enabled(rt.AutoDirectNodeRoutes))
	}
}

// hostRouting is "Host Routing: BPF|Legacy" alone on its line, as in
// `cilium status`; the reason of a fallback follows on its own line.
func (r *renderer) hostRouting() {
	h := r.s.HostRouting
	r.line("Host Routing:", orUnknown(h.Mode))
	if h.Reason != "" && (h.Mode != "BPF" || r.verbose) {
		r.sub("Reason:", h.Reason)
	}
	if r.verbose {
		if h.BlockingKey != "" {
			r.sub("Blocking key:", h.BlockingKey)
		}
		if h.Fix != "" {
			r.sub("Fix:", h.Fix)
		}
	}
}

func (r *renderer) masquerading() {
	m := r.s.Masquerading
	families := fmt.Sprintf("[IPv4: %s, IPv6: Disabled]", enabled(m.IPv4))
	switch m.Mode {
	case "BPF":
		dev := ""
		if m.Device != "" {
			dev = "[" + m.Device + "]"
		}
		cidr := families
		if m.CIDR != "" {
			cidr = m.CIDR + " " + families
		}
		r.line("Masquerading:", "BPF", dev, cidr)
	case "IPTables":
		r.line("Masquerading:", "IPTables "+families)
	default:
		r.line("Masquerading:", orUnknown(m.Mode))
	}
}

// policy is the network policy line: whether the node enforces, and how
// many of its endpoints some NetworkPolicy isolates.
func (r *renderer) policy() {
	p := r.s.Policy
	if p.State == "" {
		return
	}
	r.line("Policy enforcement:", p.State, fmt.Sprintf("[eBPF; %d/%d endpoints isolated, %d NetworkPolicies, %d identities; denied %d ingress, %d egress]",
		p.Isolated, p.Endpoints, p.Policies, p.Identities, p.DeniedIngress, p.DeniedEgress))
}

// mapMigrations writes what the agent did at start with pinned maps of
// another layout or size, one line a map, whenever it did anything:
// entries lost are an event the user must see.
func (r *renderer) mapMigrations() {
	if len(r.s.MapMigrations) == 0 {
		return
	}
	carried, lost, flows := 0, 0, 0
	for _, m := range r.s.MapMigrations {
		carried, lost, flows = carried+m.Carried, lost+m.Lost, flows+m.FlowsLost
	}
	summary := fmt.Sprintf("%d maps, %d entries carried", len(r.s.MapMigrations), carried)
	if lost > 0 {
		summary += fmt.Sprintf(", %d entries lost (%d flows)", lost, flows)
	}
	r.line("Map migrations:", summary)
	for _, m := range r.s.MapMigrations {
		what := fmt.Sprintf("%s layout v%d -> v%d, max entries %d -> %d, %d carried, %d lost",
			m.Action, m.FromVersion, m.ToVersion, m.FromMax, m.ToMax, m.Carried, m.Lost)
		if m.FlowsLost != m.Lost {
			what += fmt.Sprintf(" (%d flows)", m.FlowsLost)
		}
		reason := ""
		if m.Reason != "" && (m.Lost > 0 || r.verbose) {
			reason = "(" + m.Reason + ")"
		}
		r.sub(m.Map+":", what, reason)
	}
}

func (r *renderer) services() {
	if r.s.ServicesOutsideCIDR == 0 {
		r.line("Services:", fmt.Sprint(r.s.Services))
		return
	}
	r.line("Services:", fmt.Sprint(r.s.Services),
		fmt.Sprintf("(%d with a ClusterIP outside service-cidr %s: set service-cidr to kube-apiserver's --service-cluster-ip-range)",
			r.s.ServicesOutsideCIDR, r.s.ServiceCIDR))
}

// reconcilers is one line for every kernel object kind's reconciler:
// healthy when none of its objects is in error; the failing objects are
// always listed, every reconciler with -v.
func (r *renderer) reconcilers() {
	rs := r.s.Reconcilers
	if len(rs) == 0 {
		return
	}
	healthy, objects := 0, 0
	for _, rc := range rs {
		objects += rc.Objects
		if rc.Errors == 0 {
			healthy++
		}
	}
	r.line("Reconcilers:", fmt.Sprintf("%d/%d healthy, %d objects", healthy, len(rs), objects))
	rows := [][]string{{"Name", "Objects", "Done", "Pending", "Errors", "Repaired"}}
	for _, rc := range rs {
		if !r.verbose && rc.Errors == 0 {
			continue
		}
		rows = append(rows, []string{rc.Name, fmt.Sprint(rc.Objects), fmt.Sprint(rc.Done), fmt.Sprint(rc.Pending),
			fmt.Sprint(rc.Errors), fmt.Sprint(rc.Repairs)})
	}
	if len(rows) > 1 {
		r.table(rows)
	}
	for _, rc := range rs {
		for _, f := range rc.Failing {
			r.sub(rc.Name+":", f)
		}
	}
}

func (r *renderer) controllers() {
	cs := r.s.Controllers
	healthy := 0
	for _, c := range cs {
		if c.Failures == 0 {
			healthy++
		}
	}
	r.line("Controller Status:", fmt.Sprintf("%d/%d healthy", healthy, len(cs)))
	rows := [][]string{{"Name", "Last success", "Failures", "Last error"}}
	sorted := append([]api.ControllerStatus(nil), cs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, c := range sorted {
		if !r.verbose && c.Failures == 0 {
			continue
		}
		lastErr := c.LastError
		if lastErr == "" {
			lastErr = "no error"
		}
		rows = append(rows, []string{c.Name, r.ago(c.LastSuccess), fmt.Sprint(c.Failures), lastErr})
	}
	if len(rows) > 1 {
		r.table(rows)
	}
}

// sourceRank orders source kinds by precedence, lowest first.
var sourceRank = map[string]int{"default": 0, "flag": 1, "configmap": 2, "nodeconfig": 3}

func (r *renderer) configSources() {
	type count struct {
		source string
		rank   int
		n      int
	}
	counts := map[string]*count{}
	for _, cs := range r.s.ConfigSources {
		c, ok := counts[cs.Source]
		if !ok {
			rank, known := sourceRank[cs.Kind]
			if !known {
				rank = len(sourceRank)
			}
			c = &count{source: cs.Source, rank: rank}
			counts[cs.Source] = c
		}
		c.n++
	}
	list := make([]*count, 0, len(counts))
	for _, c := range counts {
		list = append(list, c)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].rank != list[j].rank {
			return list[i].rank < list[j].rank
		}
		return list[i].source < list[j].source
	})
	parts := make([]string, len(list))
	for i, c := range list {
		parts[i] = fmt.Sprintf("%s (%d)", c.source, c.n)
	}
	if len(parts) == 0 {
		parts = []string{"unknown"}
	}
	r.line("Config sources:", strings.Join(parts, ", "))
	for _, w := range r.s.ConfigWarnings {
		r.sub("Warning:", w)
	}
	if r.s.ConfigPending != nil {
		r.line("Config pending:", PendingSummary(r.s.ConfigPending))
	}
	if r.verbose && len(r.s.ConfigSources) > 0 {
		var rows [][]string
		for _, cs := range r.s.ConfigSources {
			src := cs.Source
			if len(cs.Overridden) > 0 {
				src += " (overrides " + strings.Join(cs.Overridden, ", ") + ")"
			}
			v := cs.Value
			if v == "" {
				v = `""`
			}
			rows = append(rows, []string{cs.Key, v, src})
		}
		r.table(rows)
	}
}

func (r *renderer) clusterHealth() {
	h := r.s.ClusterHealth
	if h == nil {
		r.line("Cluster health:", "Probe disabled")
		return
	}
	when := ""
	if !h.ProbeTime.IsZero() {
		when = "(" + h.ProbeTime.UTC().Format(time.RFC3339) + ")"
	}
	r.line("Cluster health:", fmt.Sprintf("%d/%d reachable", h.Reachable, h.Total), when)
	if len(h.Unreachable) > 0 {
		r.sub("Unreachable:", strings.Join(h.Unreachable, ", "))
	}
}

// ago renders t relative to the status' own time, or absolute when the
// status has none.
func (r *renderer) ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	if r.s.Time.IsZero() {
		return t.UTC().Format(time.RFC3339)
	}
	d := r.s.Time.Sub(t)
	if d < 0 {
		d = 0
	}
	return fmtDuration(d) + " ago"
}

func fmtDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func enabled(b bool) string {
	if b {
		return "Enabled"
	}
	return "Disabled"
}

func orUnknown(s string) string {
	if s == "" {
		return "Unknown"
	}
	return s
}
