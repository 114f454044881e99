// Package health probes the connectivity of every node of the cluster, as
// cilium-health does.
//
// Every node answers "GET /hello" twice: the agent on the node's address
// (port 4240) and a health endpoint, an address of the node's pod CIDR that
// lives in a network namespace of its own behind a veth, exactly like a pod.
// The Prober sends, to every node, an ICMP echo ("ICMP to stack") and an
// HTTP request ("HTTP to agent") to both addresses; a node is reachable when
// all four succeed. The last round is a Report, which the agent serves on
// its API, summarises into api.ClusterHealthStatus for `glia status` and
// records as metrics; Render prints it for `glia health status`.
package health

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"glia.dev/glia/internal/api"
)

// Defaults and fixed names.
const (
	// DefaultPort is the health port: the agent's /hello on the node's
	// address and the health endpoint's /hello on its pod address.
	DefaultPort = 4240
	// HelloPath is the path both health servers answer.
	HelloPath = "/hello"
)

// Values of the target and probe labels given to a Recorder.
const (
	TargetHost     = "host"
	TargetEndpoint = "endpoint"
	ProbeICMP      = "icmp"
	ProbeHTTP      = "http"
)

// Names of the probes as printed ("ICMP to stack: connection refused").
const (
	ICMPName = "ICMP to stack"
	HTTPName = "HTTP to agent"
)

// Target is one node to probe.
type Target struct {
	Node string
	// HostIP is the node's address, probed by ICMP and by HTTP to the
	// agent's health port.
	HostIP netip.Addr
	// EndpointIP is the node's health endpoint address (the router address
	// of its pod CIDR); invalid when the node has no pod CIDR yet, in which
	// case only the host is probed.
	EndpointIP netip.Addr
	// Local marks the node the prober runs on ("(localhost)").
	Local bool
}

// Report is the result of the last complete probe round. The zero Report
// (zero ProbeTime) means no round has completed yet.
type Report struct {
	// ProbeTime is when the round started.
	ProbeTime time.Time `json:"probeTime"`
	// Interval is the time between rounds when the round ran (JSON:
	// nanoseconds).
	Interval time.Duration `json:"interval,omitempty"`
	// Nodes is sorted: the local node first, then by name.
	Nodes []NodeStatus `json:"nodes"`
}

// NodeStatus is what one round found for one node.
type NodeStatus struct {
	Name  string     `json:"name"`
	Local bool       `json:"local,omitempty"`
	Host  PathStatus `json:"host"`
	// Endpoint is nil when the node has no health endpoint address.
	Endpoint *PathStatus `json:"endpoint,omitempty"`
}

// PathStatus is the pair of probes sent to one address of a node.
type PathStatus struct {
	Addr netip.Addr  `json:"addr"`
	ICMP ProbeResult `json:"icmp"`
	HTTP ProbeResult `json:"http"`
}

// ProbeResult is one probe's outcome.
type ProbeResult struct {
	OK bool `json:"ok"`
	// RTT is the round-trip time of a successful probe (JSON: nanoseconds).
	RTT time.Duration `json:"rtt,omitempty"`
	// Err says why the probe failed, short: "connection refused",
	// "timeout after 3s".
	Err string `json:"error,omitempty"`
}

// OK says whether both probes of the path succeeded.
func (p PathStatus) OK() bool { return p.ICMP.OK && p.HTTP.OK }

// Reachable says whether every probe of the node succeeded.
func (n NodeStatus) Reachable() bool {
	return n.Host.OK() && (n.Endpoint == nil || n.Endpoint.OK())
}

// Problems names every failed probe of the node, e.g.
// "endpoint 198.19.2.1: HTTP to agent: connection refused".
func (n NodeStatus) Problems() []string {
	var out []string
	add := func(what string, p *PathStatus) {
		if p == nil {
			return
		}
		for _, pr := range []struct {
			name string
			res  ProbeResult
		}{{ICMPName, p.ICMP}, {HTTPName, p.HTTP}} {
			if !pr.res.OK {
				out = append(out, fmt.Sprintf("%s %s: %s: %s", what, p.Addr, pr.name, errText(pr.res.Err)))
			}
		}
	}
	add("host", &n.Host)
	add("endpoint", n.Endpoint)
	return out
}

func errText(s string) string {
	if s == "" {
		return "failed"
	}
	return s
}

// Summary condenses the report for `glia status`.
func (r Report) Summary() api.ClusterHealthStatus {
	s := api.ClusterHealthStatus{ProbeTime: r.ProbeTime, Total: len(r.Nodes)}
	for _, n := range r.Nodes {
		if n.Reachable() {
			s.Reachable++
		} else {
			s.Unreachable = append(s.Unreachable, n.Name)
		}
	}
	sort.Strings(s.Unreachable)
	return s
}

// sortNodes orders nodes as they are printed: the local node first, then
// by name.
func sortNodes(nodes []NodeStatus) {
	sort.SliceStable(nodes, func(i, j int) bool {
		if nodes[i].Local != nodes[j].Local {
			return nodes[i].Local
		}
		return nodes[i].Name < nodes[j].Name
	})
}
