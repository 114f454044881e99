package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/connectivity"
	"glia.dev/glia/internal/health"
)

var t0 = time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)

// Fixtures a fake agent serves.
var (
	fixStatus = api.Status{
		NodeName: "lab-node-2", Ready: true, Time: t0, Datapath: "ebpf (tcx)", AgentUptime: 90 * time.Second,
		Version: "0.1.0", Commit: "61f425b0c3e1d2f3a4b5c6d7e8f90a1b2c3d4e5f",
		Readiness:            []api.ReadinessCheck{{Name: "datapath", OK: true}},
		Kubernetes:           api.KubernetesStatus{State: "Ok", Version: "v1.37.2", LastSuccess: t0.Add(-time.Second)},
		KubeProxyReplacement: api.KubeProxyReplacementStatus{Enabled: true, Devices: []string{"eth0 198.18.0.12"}},
		HostRouting:          api.HostRoutingStatus{Mode: "BPF", Reason: "all requirements hold"},
		Masquerading:         api.MasqueradingStatus{Mode: "BPF", Device: "eth0", CIDR: "198.19.0.0/16", IPv4: true},
		Routing:              api.RoutingStatus{Mode: "native", AutoDirectNodeRoutes: true},
		IPAM:                 api.IPAMStatus{PodCIDR: "198.19.2.0/24", Allocated: 3, Size: 253},
		ConfigSources:        []api.ConfigSource{{Key: "kube-proxy-replacement", Value: "true", Source: "ConfigMap glia-system/glia-config", Kind: "configmap"}},
		ConfigWarnings:       []string{"Cilium keys glia ignores: cluster-name"},
		Controllers:          []api.ControllerStatus{{Name: "sync", LastSuccess: t0}},
		Reconcilers:          []api.ReconcilerStatus{{Name: "endpoints", Objects: 3, Done: 3, Repairs: 1}},
		ClusterHealth:        &api.ClusterHealthStatus{Reachable: 2, Total: 2, ProbeTime: t0},
		Endpoints:            2, Services: 4,
	}
	fixHealth = health.Report{ProbeTime: t0, Interval: 15 * time.Second, Nodes: []health.NodeStatus{
		{Name: "lab-node-2", Local: true,
			Host:     health.PathStatus{Addr: netip.MustParseAddr("198.18.0.12"), ICMP: health.ProbeResult{OK: true, RTT: 860424 * time.Nanosecond}, HTTP: health.ProbeResult{OK: true, RTT: time.Millisecond}},
			Endpoint: &health.PathStatus{Addr: netip.MustParseAddr("198.19.2.1"), ICMP: health.ProbeResult{OK: true, RTT: time.Millisecond}, HTTP: health.ProbeResult{Err: "connection refused"}}},
	}}
	fixConfig = config.Report{Node: "lab-node-2", Inputs: config.Inputs{
		ConfigMap: map[string]string{"kube-proxy-replacement": "true"}, ConfigMapName: "glia-system/glia-config"}}
	fixEndpoints = []api.Endpoint{{Attachment: api.Attachment{ContainerID: "0123456789abcdef", IfName: "eth0"}, IP: "198.19.2.5",
		Netns: "/var/run/netns/x", HostIfName: "gl0123456789a", PodNamespace: "default", PodName: "web-1", Created: t0}}
	fixServices = []api.Service{{Name: "default/web:http", Type: "ClusterIP", Frontend: "198.18.128.20:80", Protocol: "TCP",
		Backends: []api.ServiceBackend{{Address: "198.19.2.5:8080", Node: "lab-node-2", Ready: true}}}}
)

// fakeAgent serves the fixtures on a unix socket, as the agent does.
func fakeAgent(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "glia.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for path, v := range map[string]any{api.PathStatus: fixStatus, api.PathHealth: fixHealth, api.PathConfig: fixConfig,
		api.PathEndpoints: fixEndpoints, api.PathServices: fixServices} {
		mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		})
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

// runGlia runs the CLI in process and returns stdout and the error.
func runGlia(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := root.ExecuteContextC(ctx)
	return out.String(), err
}

// same decodes data (JSON or YAML) into a fresh value of want's type and
// compares it with want as JSON sees it (fields JSON leaves out are not
// compared); it also checks apiVersion and kind.
func same[T any](t *testing.T, format, kind string, data []byte, want T, list bool) {
	t.Helper()
	if format == "yaml" {
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			t.Fatalf("yaml: %v\n%s", err, data)
		}
		data = j
	}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		t.Fatalf("%s: %v\n%s", format, err, data)
	}
	if meta.APIVersion != OutputAPIVersion || meta.Kind != kind {
		t.Errorf("%s: apiVersion %q kind %q, want %q %q", format, meta.APIVersion, meta.Kind, OutputAPIVersion, kind)
	}
	// want, as JSON sees it
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var canon, got T
	if err := json.Unmarshal(b, &canon); err != nil {
		t.Fatal(err)
	}
	if list {
		var l struct {
			Items T `json:"items"`
		}
		err = json.Unmarshal(data, &l)
		got = l.Items
	} else {
		err = json.Unmarshal(data, &got)
	}
	if err != nil {
		t.Fatalf("%s: decode: %v\n%s", format, err, data)
	}
	if d := cmp.Diff(canon, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("%s does not parse back to the same object (-want +got):\n%s\n%s", format, d, data)
	}
}

// formatCase is one command against the fake agent.
type formatCase struct {
	args     []string
	kind     string
	check    func(t *testing.T, format string, data []byte)
	jsonpath string // a template and what it prints
	wantPath string
	wantText string // a line of the text form
}

func TestCommandFormats(t *testing.T) {
	sock := fakeAgent(t)
	cur, _, err := config.Resolve(fixConfig.Inputs)
	if err != nil {
		t.Fatal(err)
	}
	view := newConfigView("lab-node-2", cur)
	cases := []formatCase{
		{args: []string{"status"}, kind: kindStatus,
			check:    func(t *testing.T, f string, d []byte) { same(t, f, kindStatus, d, fixStatus, false) },
			jsonpath: "{.hostRouting.mode} {.masquerading.device} {.clusterHealth.reachable}", wantPath: "BPF eth0 2",
			wantText: "Masquerading: BPF [eth0] 198.19.0.0/16 [IPv4: Enabled, IPv6: Disabled]"},
		{args: []string{"health", "status"}, kind: kindHealthReport,
			check:    func(t *testing.T, f string, d []byte) { same(t, f, kindHealthReport, d, fixHealth, false) },
			jsonpath: "{.nodes[0].name} {.nodes[0].endpoint.http.error}", wantPath: "lab-node-2 connection refused",
			wantText: "Cluster health: 0/1 reachable (2026-11-26T01:02:03Z)"},
		{args: []string{"config", "view"}, kind: kindConfigView,
			check:    func(t *testing.T, f string, d []byte) { same(t, f, kindConfigView, d, view, false) },
			jsonpath: `{.keys[?(@.key=="kube-proxy-replacement")].source}`, wantPath: "ConfigMap glia-system/glia-config",
			wantText: "Effective config of lab-node-2 (resolved at its agent's start):"},
		{args: []string{"endpoint", "list"}, kind: kindEndpointList,
			check:    func(t *testing.T, f string, d []byte) { same(t, f, kindEndpointList, d, fixEndpoints, true) },
			jsonpath: "{.items[*].ip}", wantPath: "198.19.2.5",
			wantText: "default/web-1  198.19.2.5  gl0123456789a  0123456789ab  eth0"},
		{args: []string{"service", "list"}, kind: kindServiceList,
			check:    func(t *testing.T, f string, d []byte) { same(t, f, kindServiceList, d, fixServices, true) },
			jsonpath: "{.items[0].backends[0].address}", wantPath: "198.19.2.5:8080",
			wantText: "default/web:http  ClusterIP  198.18.128.20:80/TCP  -         198.19.2.5:8080 (active, lab-node-2)"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			args := append(append([]string{}, c.args...), "--socket", sock)
			for _, f := range []string{"json", "yaml"} {
				out, err := runGlia(t, append(args, "-o", f)...)
				if err != nil {
					t.Fatalf("-o %s: %v", f, err)
				}
				c.check(t, f, []byte(out))
			}
			out, err := runGlia(t, append(args, "-o", "jsonpath="+c.jsonpath)...)
			if err != nil || out != c.wantPath {
				t.Errorf("-o jsonpath=%s: %q, %v; want %q", c.jsonpath, out, err, c.wantPath)
			}
			for _, text := range [][]string{nil, {"-o", "text"}} {
				out, err = runGlia(t, append(args, text...)...)
				if err != nil || !strings.Contains(out, c.wantText+"\n") {
					t.Errorf("text %v: want a line %q; got %v:\n%s", text, c.wantText, err, out)
				}
			}
		})
	}
}

// TestObjectFormats: the objects printed without an agent (the BPF maps,
// the connectivity report, a preview, the cluster tables, the version)
// parse back the same in json and yaml, and jsonpath reads them.
func TestObjectFormats(t *testing.T) {
	p, err := config.NewPreview(nil, config.Inputs{ConfigMap: map[string]string{"kube-proxy-replacement": "true", "enable-bpf-masquerade": "true"}},
		config.KernelProbe{TCX: true, BPFRedirectPeer: true, BPFRedirectNeigh: true, FIBLookup: true})
	if err != nil {
		t.Fatal(err)
	}
	preview := newConfigPreview("lab-node-2", p, []string{"glia-system/unused"})
	st := fixStatus
	tests := []struct {
		name     string
		kind     string
		print    func(t *testing.T, o *outputFlag) string
		check    func(t *testing.T, f string, d []byte)
		jsonpath string
		want     string
	}{
		{name: "bpf lb", kind: kindBPFLBList,
			print: func(t *testing.T, o *outputFlag) string {
				return printed(t, o, kindBPFLBList, []lbRow{{Service: "198.18.128.10:80/TCP", Backend: "0.0.0.0:0", ID: 1, Flags: []string{"ClusterIP"}}})
			},
			check: func(t *testing.T, f string, d []byte) {
				same(t, f, kindBPFLBList, d, []lbRow{{Service: "198.18.128.10:80/TCP", Backend: "0.0.0.0:0", ID: 1, Flags: []string{"ClusterIP"}}}, true)
			},
			jsonpath: "{.items[0].flags[0]}", want: "ClusterIP"},
		{name: "bpf ct", kind: kindBPFCTList,
			print: func(t *testing.T, o *outputFlag) string {
				return printed(t, o, kindBPFCTList, []ctRow{{Proto: "TCP", Dir: "SVC", Src: "198.19.1.2:4000", Dst: "198.18.128.10:80", BackendID: 7, AgeSecs: 3, ExpSecs: 20}})
			},
			check: func(t *testing.T, f string, d []byte) {
				same(t, f, kindBPFCTList, d, []ctRow{{Proto: "TCP", Dir: "SVC", Src: "198.19.1.2:4000", Dst: "198.18.128.10:80", BackendID: 7, AgeSecs: 3, ExpSecs: 20}}, true)
			},
			jsonpath: "{.items[0].backendID}", want: "7"},
		{name: "bpf nat", kind: kindBPFNATList,
			print: func(t *testing.T, o *outputFlag) string {
				return printed(t, o, kindBPFNATList, []natRow{{Proto: "TCP", Dir: "OUT", Src: "198.19.1.2:4000", Dst: "198.18.64.10:80", To: "198.18.0.11:4000"}})
			},
			check: func(t *testing.T, f string, d []byte) {
				same(t, f, kindBPFNATList, d, []natRow{{Proto: "TCP", Dir: "OUT", Src: "198.19.1.2:4000", Dst: "198.18.64.10:80", To: "198.18.0.11:4000"}}, true)
			},
			jsonpath: "{.items[0].to}", want: "198.18.0.11:4000"},
		{name: "bpf endpoint", kind: kindBPFEndpointList,
			print: func(t *testing.T, o *outputFlag) string {
				return printed(t, o, kindBPFEndpointList, []endpointRow{{IP: "198.19.1.20", IfIndex: 5}})
			},
			check: func(t *testing.T, f string, d []byte) {
				same(t, f, kindBPFEndpointList, d, []endpointRow{{IP: "198.19.1.20", IfIndex: 5}}, true)
			},
			jsonpath: "{.items[0].ifindex}", want: "5"},
		{name: "connectivity test", kind: kindConnectivityReport,
			print: func(t *testing.T, o *outputFlag) string {
				return printed(t, o, kindConnectivityReport, &connectivity.Report{Namespace: "glia-test", Line: "All 1 tests (1 actions) successful",
					Summary: connectivity.Summary{Tests: 1, Actions: 1, Success: true},
					Tests:   []connectivity.TestResult{{Name: "pod-to-pod", Duration: time.Second}}})
			},
			check: func(t *testing.T, f string, d []byte) {
				same(t, f, kindConnectivityReport, d, connectivity.Report{Namespace: "glia-test", Line: "All 1 tests (1 actions) successful",
					Summary: connectivity.Summary{Tests: 1, Actions: 1, Success: true},
					Tests:   []connectivity.TestResult{{Name: "pod-to-pod", Duration: time.Second}}}, false)
			},
			jsonpath: "{.summary.success}", want: "true"},
		{name: "config preview", kind: kindConfigPreview,
			print:    func(t *testing.T, o *outputFlag) string { return printed(t, o, kindConfigPreview, preview) },
			check:    func(t *testing.T, f string, d []byte) { same(t, f, kindConfigPreview, d, preview, false) },
			jsonpath: "{.modes.hostRouting} {.unmatchedNodeConfigs[0]}", want: "BPF glia-system/unused"},
		{name: "status --all-nodes", kind: kindAgentStatusList,
			print: func(t *testing.T, o *outputFlag) string {
				return printed(t, o, kindAgentStatusList, []agentStatus{{Node: "lab-node-1", Error: "no answer"}, {Node: "lab-node-2", Pod: "glia-x", Status: &st}})
			},
			check: func(t *testing.T, f string, d []byte) {
				same(t, f, kindAgentStatusList, d, []agentStatus{{Node: "lab-node-1", Error: "no answer"}, {Node: "lab-node-2", Pod: "glia-x", Status: &st}}, true)
			},
			jsonpath: "{.items[1].status.hostRouting.mode}", want: "BPF"},
		{name: "version --cluster", kind: kindVersion,
			print: func(t *testing.T, o *outputFlag) string {
				return printed(t, o, kindVersion, versionReport{Agents: []agentVersion{{Node: "lab-node-1", Version: "0.1.0", Commit: "abc", Datapath: "legacy"}}})
			},
			check: func(t *testing.T, f string, d []byte) {
				same(t, f, kindVersion, d, versionReport{Agents: []agentVersion{{Node: "lab-node-1", Version: "0.1.0", Commit: "abc", Datapath: "legacy"}}}, false)
			},
			jsonpath: "{.agents[0].datapath}", want: "legacy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range []string{"json", "yaml"} {
				var o outputFlag
				if err := o.Set(f); err != nil {
					t.Fatal(err)
				}
				tt.check(t, f, []byte(tt.print(t, &o)))
			}
			var o outputFlag
			if err := o.Set("jsonpath=" + tt.jsonpath); err != nil {
				t.Fatal(err)
			}
			if got := tt.print(t, &o); got != tt.want {
				t.Errorf("jsonpath %s = %q, want %q", tt.jsonpath, got, tt.want)
			}
		})
	}
}

func printed(t *testing.T, o *outputFlag, kind string, v any) string {
	t.Helper()
	var b bytes.Buffer
	if err := o.print(&b, kind, v, func(_ io.Writer) error { return errors.New("text printed for " + o.format) }); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestUnknownFormat: every command with -o refuses a format it does not
// know, as a usage error listing the valid ones, before asking anything.
func TestUnknownFormat(t *testing.T) {
	n := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Flags().Lookup("output") == nil && c.InheritedFlags().Lookup("output") == nil {
			return
		}
		if c.HasSubCommands() {
			return
		}
		n++
		path := strings.Fields(c.CommandPath())[1:]
		t.Run(strings.Join(path, " "), func(t *testing.T) {
			_, err := runGlia(t, append(path, "-o", "xml", "--socket", "/nonexistent/glia.sock")...)
			if ExitCode(err) != ExitUsage {
				t.Fatalf("exit code %d (%v), want %d", ExitCode(err), err, ExitUsage)
			}
			for _, f := range []string{`"xml"`, "text", "json", "yaml", "jsonpath=TEMPLATE"} {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
		})
	}
	walk(newRoot())
	// status, health status, config view, config preview, endpoint list,
	// service list, 4 × bpf list, connectivity test, version
	if n < 12 {
		t.Errorf("%d commands take -o, want at least 12", n)
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"--help"}, ExitOK},
		{[]string{"status", "--help"}, ExitOK},
		{[]string{"bpf"}, ExitOK}, // a group alone prints its help
		{[]string{"version"}, ExitOK},
		{[]string{"bogus"}, ExitUsage},
		{[]string{"bpf", "bogus"}, ExitUsage},
		{[]string{"status", "--bogus"}, ExitUsage},
		{[]string{"status", "extra-arg"}, ExitUsage},
		{[]string{"status", "-o", "jsonpath={.unclosed"}, ExitUsage},
		{[]string{"status", "--all-nodes", "--node", "lab-node-1"}, ExitUsage},
		{[]string{"status", "--node", "not-a-lab-node"}, ExitUsage},
		{[]string{"connectivity", "_ping"}, ExitUsage}, // a missing argument
		{[]string{"config", "preview", "--label", "novalue"}, ExitUsage},
		{[]string{"bpf", "lb", "list", "--node", "lab-node-1", "--bpffs-dir", "/x"}, ExitUsage},
		{[]string{"status", "--socket", "/nonexistent/glia.sock"}, ExitFailure},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := runGlia(t, tt.args...)
			if got := ExitCode(err); got != tt.want {
				t.Errorf("exit code %d (%v), want %d", got, err, tt.want)
			}
			var u *UsageError
			if errors.As(err, &u) && !strings.HasPrefix(u.Hint(), "Run 'glia") {
				t.Errorf("hint %q", u.Hint())
			}
		})
	}
}
