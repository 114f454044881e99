package health

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/metrics"
)

// *metrics.Metrics is what the agent passes as ProberConfig.Recorder.
var _ Recorder = (*metrics.Metrics)(nil)

var probeTime = time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)

func ok(rtt time.Duration) ProbeResult { return ProbeResult{OK: true, RTT: rtt} }
func fail(err string) ProbeResult      { return ProbeResult{Err: err} }

func path(addr string, icmp, http ProbeResult) PathStatus {
	return PathStatus{Addr: netip.MustParseAddr(addr), ICMP: icmp, HTTP: http}
}

func ptr[T any](v T) *T { return &v }

// sampleReport: the local node and one other node healthy, a third whose
// endpoint refuses HTTP, a fourth without pod CIDR (host only, healthy).
func sampleReport() Report {
	return Report{
		ProbeTime: probeTime,
		Interval:  10 * time.Second,
		Nodes: []NodeStatus{
			{
				Name:     "lab-node-1",
				Host:     path("198.18.0.11", ok(813324*time.Nanosecond), ok(553445*time.Nanosecond)),
				Endpoint: ptr(path("198.19.0.1", ok(865976*time.Nanosecond), ok(3440655*time.Nanosecond))),
			},
			{
				Name:     "lab-node-3",
				Host:     path("198.18.0.13", ok(time.Millisecond), ok(2*time.Millisecond)),
				Endpoint: ptr(path("198.19.2.1", fail("timeout after 3s"), fail("connection refused"))),
			},
			{
				Name:     "lab-node-2",
				Local:    true,
				Host:     path("198.18.0.12", ok(120*time.Microsecond), ok(300*time.Microsecond)),
				Endpoint: ptr(path("198.19.1.1", ok(783861*time.Nanosecond), ok(256419*time.Nanosecond))),
			},
			{
				Name: "lab-node-4",
				Host: path("198.18.0.14", ok(time.Millisecond), ok(time.Millisecond)),
			},
		},
	}
}

func TestInterval(t *testing.T) {
	tests := []struct {
		base  time.Duration
		nodes int
		want  time.Duration
	}{
		{10 * time.Second, 0, 10 * time.Second},
		{10 * time.Second, 5, 10 * time.Second},
		{10 * time.Second, 200, 10 * time.Second},
		{10 * time.Second, 201, 10050 * time.Millisecond},
		{10 * time.Second, 1000, 50 * time.Second},
		{time.Second, 100, 5 * time.Second},
	}
	for _, tt := range tests {
		if got := interval(tt.base, tt.nodes); got != tt.want {
			t.Errorf("interval(%v, %d) = %v, want %v", tt.base, tt.nodes, got, tt.want)
		}
	}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		name string
		rep  Report
		want api.ClusterHealthStatus
	}{
		{"no round yet", Report{}, api.ClusterHealthStatus{}},
		{"sample", sampleReport(), api.ClusterHealthStatus{
			Reachable: 3, Total: 4, ProbeTime: probeTime, Unreachable: []string{"lab-node-3"},
		}},
		{"one failed probe is enough", Report{ProbeTime: probeTime, Nodes: []NodeStatus{
			{Name: "b", Host: path("198.18.0.2", fail("x"), ok(1))},
			{Name: "a", Host: path("198.18.0.1", ok(1), fail("x"))},
			{Name: "c", Host: path("198.18.0.3", ok(1), ok(1)), Endpoint: ptr(path("198.19.3.1", ok(1), fail("x")))},
			{Name: "d", Host: path("198.18.0.4", ok(1), ok(1)), Endpoint: ptr(path("198.19.4.1", ok(1), ok(1)))},
		}}, api.ClusterHealthStatus{Reachable: 1, Total: 4, ProbeTime: probeTime, Unreachable: []string{"a", "b", "c"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.rep.Summary(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Summary() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProblems(t *testing.T) {
	n := NodeStatus{
		Name:     "x",
		Host:     path("198.18.0.13", fail(""), ok(1)),
		Endpoint: ptr(path("198.19.2.1", fail("timeout after 3s"), fail("connection refused"))),
	}
	want := []string{
		"host 198.18.0.13: ICMP to stack: failed",
		"endpoint 198.19.2.1: ICMP to stack: timeout after 3s",
		"endpoint 198.19.2.1: HTTP to agent: connection refused",
	}
	if diff := cmp.Diff(want, n.Problems()); diff != "" {
		t.Errorf("Problems() (-want +got):\n%s", diff)
	}
}

func TestRender(t *testing.T) {
	tests := []struct {
		name    string
		rep     Report
		verbose bool
		want    string
	}{
		{
			name:    "verbose",
			rep:     sampleReport(),
			verbose: true,
			want: `Probe time: 2026-11-26T01:02:03Z
Nodes:
  lab-node-2 (localhost):
    Host connectivity to 198.18.0.12:
      ICMP to stack: OK, RTT=120µs
      HTTP to agent: OK, RTT=300µs
    Endpoint connectivity to 198.19.1.1:
      ICMP to stack: OK, RTT=783.861µs
      HTTP to agent: OK, RTT=256.419µs
  lab-node-1:
    Host connectivity to 198.18.0.11:
      ICMP to stack: OK, RTT=813.324µs
      HTTP to agent: OK, RTT=553.445µs
    Endpoint connectivity to 198.19.0.1:
      ICMP to stack: OK, RTT=865.976µs
      HTTP to agent: OK, RTT=3.440655ms
  lab-node-3:
    Host connectivity to 198.18.0.13:
      ICMP to stack: OK, RTT=1ms
      HTTP to agent: OK, RTT=2ms
    Endpoint connectivity to 198.19.2.1:
      ICMP to stack: FAILED: timeout after 3s
      HTTP to agent: FAILED: connection refused
  lab-node-4:
    Host connectivity to 198.18.0.14:
      ICMP to stack: OK, RTT=1ms
      HTTP to agent: OK, RTT=1ms
    Endpoint connectivity: no health endpoint address (the node has no pod CIDR)
Cluster health: 3/4 reachable (2026-11-26T01:02:03Z)
  lab-node-3: endpoint 198.19.2.1: ICMP to stack: timeout after 3s; endpoint 198.19.2.1: HTTP to agent: connection refused
`,
		},
		{
			name: "short",
			rep:  sampleReport(),
			want: `Cluster health: 3/4 reachable (2026-11-26T01:02:03Z)
  lab-node-3: endpoint 198.19.2.1: ICMP to stack: timeout after 3s; endpoint 198.19.2.1: HTTP to agent: connection refused
`,
		},
		{
			name: "all reachable",
			rep: Report{ProbeTime: probeTime.In(time.FixedZone("CET", 3600)), Nodes: []NodeStatus{
				{Name: "a", Local: true, Host: path("198.18.0.1", ok(1), ok(1)), Endpoint: ptr(path("198.19.0.1", ok(1), ok(1)))},
			}},
			want: "Cluster health: 1/1 reachable (2026-11-26T01:02:03Z)\n",
		},
		{
			name: "no round yet",
			rep:  Report{},
			want: "Cluster health: no probe round completed yet\n",
		},
		{
			name:    "no round yet, verbose",
			rep:     Report{},
			verbose: true,
			want:    "Probe time: never\nNodes:\nCluster health: no probe round completed yet\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Render(&b, tt.rep, tt.verbose); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, b.String()); diff != "" {
				t.Errorf("Render (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReportJSON(t *testing.T) {
	rep := sampleReport()
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rep, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
	// The wire names the CLI decodes.
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	node := raw["nodes"].([]any)[1].(map[string]any)
	wantNode := map[string]any{
		"name": "lab-node-3",
		"host": map[string]any{
			"addr": "198.18.0.13",
			"icmp": map[string]any{"ok": true, "rtt": float64(time.Millisecond)},
			"http": map[string]any{"ok": true, "rtt": float64(2 * time.Millisecond)},
		},
		"endpoint": map[string]any{
			"addr": "198.19.2.1",
			"icmp": map[string]any{"ok": false, "error": "timeout after 3s"},
			"http": map[string]any{"ok": false, "error": "connection refused"},
		},
	}
	if diff := cmp.Diff(wantNode, node); diff != "" {
		t.Errorf("JSON of a node (-want +got):\n%s", diff)
	}
}
