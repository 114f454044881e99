package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/endpoint"
	"glia.dev/glia/internal/ipam"
	"glia.dev/glia/internal/metrics"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestControllers(t *testing.T) {
	c := newControllers()
	ctx := context.Background()
	boom := errors.New("boom")
	fail := func(context.Context) error { return boom }
	ok := func(context.Context) error { return nil }

	before := time.Now()
	if err := c.run(ctx, "sync-nodes", ok); err != nil {
		t.Fatalf("run ok = %v", err)
	}
	for i := 0; i < 3; i++ {
		if err := c.run(ctx, "sync-services", fail); !errors.Is(err, boom) {
			t.Fatalf("run fail = %v, want the controller's error", err)
		}
	}
	if err := c.run(ctx, "endpoint-gc", fail); !errors.Is(err, boom) {
		t.Fatalf("run fail = %v", err)
	}
	opts := cmpopts.IgnoreFields(api.ControllerStatus{}, "LastSuccess")
	want := []api.ControllerStatus{
		{Name: "endpoint-gc", Failures: 1, LastError: "boom"},
		{Name: "sync-nodes"},
		{Name: "sync-services", Failures: 3, LastError: "boom"},
	}
	got := c.list()
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Fatalf("list (-want +got):\n%s", diff)
	}
	if got[1].LastSuccess.Before(before) {
		t.Errorf("sync-nodes LastSuccess = %v, want set by the successful run", got[1].LastSuccess)
	}
	if !got[0].LastSuccess.IsZero() || !got[2].LastSuccess.IsZero() {
		t.Errorf("controllers that never succeeded have a LastSuccess: %+v", got)
	}

	// A success resets the failure count and the error.
	if err := c.run(ctx, "sync-services", ok); err != nil {
		t.Fatal(err)
	}
	got = c.list()
	if got[2].Failures != 0 || got[2].LastError != "" || got[2].LastSuccess.IsZero() {
		t.Errorf("after a success: %+v, want no failures, no error, a LastSuccess", got[2])
	}
	// list returns copies: changing them changes nothing recorded.
	got[2].Failures = 99
	if c.list()[2].Failures != 0 {
		t.Error("list returned the recorded status, not a copy")
	}
	// The context reaches the controller.
	type key struct{}
	cctx := context.WithValue(ctx, key{}, "v")
	c.run(cctx, "ctx", func(ctx context.Context) error {
		if ctx.Value(key{}) != "v" {
			t.Error("controller did not get the caller's context")
		}
		return nil
	})
}

// fakeDP records what the datapath is asked to do.
type fakeDP struct {
	datapath.Datapath // nil: any method not overridden panics
	synced            [][]api.Endpoint
	upserted          []api.Endpoint
}

func (f *fakeDP) SyncEndpoints(_ context.Context, eps []api.Endpoint) error {
	f.synced = append(f.synced, append([]api.Endpoint(nil), eps...))
	return nil
}

func (f *fakeDP) UpsertEndpoint(_ context.Context, ep api.Endpoint) error {
	f.upserted = append(f.upserted, ep)
	return nil
}

func (f *fakeDP) Name() string { return "fake" }

func testEP(id, ip string) api.Endpoint {
	return api.Endpoint{Attachment: api.Attachment{ContainerID: id, IfName: "eth0"}, IP: ip, HostIfName: "gl" + id}
}

func TestKeepExtra(t *testing.T) {
	health := testEP("health", "198.19.1.1")
	pod := testEP("pod1", "198.19.1.5")
	ctx := context.Background()

	t.Run("SyncEndpoints gets the extra endpoints", func(t *testing.T) {
		f := &fakeDP{}
		k := keepExtra{Datapath: f, extra: func() []api.Endpoint { return []api.Endpoint{health} }}
		if err := k.SyncEndpoints(ctx, []api.Endpoint{pod}); err != nil {
			t.Fatal(err)
		}
		if err := k.SyncEndpoints(ctx, nil); err != nil {
			t.Fatal(err)
		}
		want := [][]api.Endpoint{{pod, health}, {health}}
		if diff := cmp.Diff(want, f.synced); diff != "" {
			t.Errorf("synced (-want +got):\n%s", diff)
		}
		// Other methods pass through untouched.
		if err := k.UpsertEndpoint(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]api.Endpoint{pod}, f.upserted); diff != "" {
			t.Errorf("upserted (-want +got):\n%s", diff)
		}
		if k.Name() != "fake" {
			t.Errorf("Name = %q", k.Name())
		}
	})
	t.Run("no extra endpoints", func(t *testing.T) {
		f := &fakeDP{}
		a := &Agent{} // no health endpoint yet
		k := keepExtra{Datapath: f, extra: a.extraEndpoints}
		if err := k.SyncEndpoints(ctx, []api.Endpoint{pod}); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([][]api.Endpoint{{pod}}, f.synced); diff != "" {
			t.Errorf("synced (-want +got):\n%s", diff)
		}
	})
	t.Run("does not write into the caller's slice", func(t *testing.T) {
		f := &fakeDP{}
		k := keepExtra{Datapath: f, extra: func() []api.Endpoint { return []api.Endpoint{health} }}
		eps := make([]api.Endpoint, 1, 4)
		eps[0] = pod
		other := testEP("pod2", "198.19.1.6")
		backing := append(eps, other) // the caller's own use of the spare capacity
		if err := k.SyncEndpoints(ctx, eps); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(other, backing[1]); diff != "" {
			t.Errorf("SyncEndpoints overwrote the caller's backing array (-want +got):\n%s", diff)
		}
	})
	t.Run("through the endpoint manager's restore", func(t *testing.T) {
		podCIDR := netip.MustParsePrefix("198.19.1.0/24")
		dir := t.TempDir()
		alloc, err := ipam.New(discard(), filepath.Join(dir, "ipam.json"), podCIDR, ipam.RouterIP(podCIDR))
		if err != nil {
			t.Fatal(err)
		}
		f := &fakeDP{}
		eps, err := endpoint.NewManager(discard(), endpoint.Config{StateDir: dir, PodCIDR: podCIDR}, alloc,
			keepExtra{Datapath: f, extra: func() []api.Endpoint { return []api.Endpoint{health} }})
		if err != nil {
			t.Fatal(err)
		}
		if err := eps.Restore(ctx); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([][]api.Endpoint{{health}}, f.synced); diff != "" {
			t.Errorf("restore synced (-want +got):\n%s", diff)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	good := Config{NodeName: "lab-node-1", StateDir: "/var/lib/glia", Socket: "/run/glia/glia.sock", BPFFSDir: "/sys/fs/bpf/glia", Device: "eth0",
		HealthProbeBindAddress: "127.0.0.1:9879", CNIConfDir: "/etc/cni/net.d", CNIBinDir: "/opt/cni/bin"}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // each names the flag and the fix
	}{
		{name: "valid", mutate: func(*Config) {}},
		{name: "no node name", mutate: func(c *Config) { c.NodeName = "" }, want: []string{"--node-name is required: the name of this node's Node object"}},
		{name: "relative state dir", mutate: func(c *Config) { c.StateDir = "state" }, want: []string{`--state-dir "state" must be an absolute path`}},
		{name: "relative socket", mutate: func(c *Config) { c.Socket = "glia.sock" }, want: []string{`--socket "glia.sock" must be an absolute path`}},
		{name: "relative bpffs dir", mutate: func(c *Config) { c.BPFFSDir = "" }, want: []string{`--bpffs-dir "" must be an absolute path`}},
		{name: "no device", mutate: func(c *Config) { c.Device = "" }, want: []string{"--device is required: the node's network device, e.g. eth0"}},
		{name: "probes off", mutate: func(c *Config) { c.HealthProbeBindAddress = "" }},
		{name: "probe address without port", mutate: func(c *Config) { c.HealthProbeBindAddress = "127.0.0.1" },
			want: []string{`--health-probe-bind-address "127.0.0.1" is not host:port (e.g. 127.0.0.1:9879; empty: off)`}},
		{name: "probe port out of range", mutate: func(c *Config) { c.HealthProbeBindAddress = ":70000" },
			want: []string{`--health-probe-bind-address ":70000" has no port in 1..65535 (e.g. 127.0.0.1:9879)`}},
		{name: "relative CNI dirs", mutate: func(c *Config) { c.CNIConfDir, c.CNIBinDir = "net.d", "bin" },
			want: []string{`--cni-conf-dir "net.d" must be an absolute path`, `--cni-bin-dir "bin" must be an absolute path`}},
		{name: "everything wrong, in flag order", mutate: func(c *Config) { *c = Config{} }, want: []string{
			"--node-name is required: the name of this node's Node object",
			`--state-dir "" must be an absolute path`,
			`--socket "" must be an absolute path`,
			`--bpffs-dir "" must be an absolute path`,
			"--device is required: the node's network device, e.g. eth0",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			err := c.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewDatapath(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("the legacy datapath needs the iptables command, not installed here")
	}
	node := datapath.LocalNode{Name: "lab-node-1", IP: netip.MustParseAddr("198.18.0.11"), Device: "eth0",
		PodCIDR: netip.MustParsePrefix("198.19.1.0/24"), ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16"),
		ServiceCIDR: netip.MustParsePrefix("198.18.128.0/17")}
	base := datapath.Options{RoutingMode: "native", Masquerade: true, BPFFSDir: "/sys/fs/bpf/glia/lab-node-1", StateDir: "/var/lib/glia/datapath", MTU: 1500}
	tests := []struct {
		name    string
		mutate  func(*datapath.Options)
		want    string
		wantErr string
	}{
		{name: "native, iptables masquerade, kube-proxy", mutate: func(*datapath.Options) {}, want: "legacy"},
		{name: "native, no masquerade", mutate: func(o *datapath.Options) { o.Masquerade = false }, want: "legacy"},
		{name: "native with auto-direct-node-routes", mutate: func(o *datapath.Options) { o.AutoDirectNodeRoutes = true }, want: "legacy"},
		{name: "tunnel", mutate: func(o *datapath.Options) { o.RoutingMode = "tunnel" }, want: "bpf"},
		{name: "kube-proxy replacement", mutate: func(o *datapath.Options) { o.KubeProxyReplacement = true }, want: "bpf"},
		{name: "bpf masquerade", mutate: func(o *datapath.Options) { o.BPFMasquerade = true }, want: "bpf"},
		{name: "bpf host routing", mutate: func(o *datapath.Options) {
			o.HostRoutingBPF, o.BPFMasquerade, o.KubeProxyReplacement = true, true, true
		}, want: "bpf"},
		{name: "bpf without a pin directory", mutate: func(o *datapath.Options) { o.KubeProxyReplacement, o.BPFFSDir = true, "" },
			wantErr: "bpffs"},
		{name: "unknown routing mode", mutate: func(o *datapath.Options) { o.RoutingMode = "carrier-pigeon" }, wantErr: "carrier-pigeon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.mutate(&o)
			dp, err := newDatapath(discard(), node, o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("newDatapath = %v, %v; want an error mentioning %q", dp, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("newDatapath: %v", err)
			}
			if dp.Name() != tt.want {
				t.Errorf("newDatapath chose %q, want %q", dp.Name(), tt.want)
			}
		})
	}
}

// gauges returns every gauge of the registry as "name{l=v,...}" → value.
func gauges(t *testing.T, m *metrics.Metrics, names ...string) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if !want[mf.GetName()] {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var ls []string
			for _, l := range mt.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			if mt.GetGauge() == nil {
				t.Fatalf("%s is not a gauge", mf.GetName())
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = mt.GetGauge().GetValue()
		}
	}
	return out
}

func TestUpdateMetrics(t *testing.T) {
	ctx := context.Background()
	t.Run("no metrics yet", func(t *testing.T) {
		// Before startObservability: nothing is set up and nothing may be touched.
		a := &Agent{ctrl: newControllers()}
		a.updateMetrics(ctx)
	})
	t.Run("legacy datapath", func(t *testing.T) {
		podCIDR := netip.MustParsePrefix("198.19.1.0/24")
		dir := t.TempDir()
		alloc, err := ipam.New(discard(), filepath.Join(dir, "ipam.json"), podCIDR, ipam.RouterIP(podCIDR))
		if err != nil {
			t.Fatal(err)
		}
		f := &fakeDP{}
		eps, err := endpoint.NewManager(discard(), endpoint.Config{StateDir: dir, PodCIDR: podCIDR}, alloc, f)
		if err != nil {
			t.Fatal(err)
		}
		if err := eps.Restore(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"0123456789abcdef01", "0123456789abcdef02"} {
			att := api.Attachment{ContainerID: id, IfName: "eth0"}
			al, err := eps.Allocate(ctx, api.AllocateRequest{Attachment: att})
			if err != nil {
				t.Fatal(err)
			}
			if err := eps.UpsertEndpoint(ctx, api.Endpoint{Attachment: att, IP: al.IP, Netns: "/var/run/netns/" + id, HostIfName: api.HostIfName(att)}); err != nil {
				t.Fatal(err)
			}
		}
		a := &Agent{
			log: discard(), ctrl: newControllers(), metrics: metrics.New(), eps: eps, dp: f,
			modes: config.Modes{HostRouting: config.HostRouting{Mode: config.HostRoutingLegacy, BlockingKey: config.KeyBPFMasquerade}},
		}
		a.ctrl.run(ctx, "sync-nodes", func(context.Context) error { return errors.New("x") })
		a.ctrl.run(ctx, "sync-nodes", func(context.Context) error { return errors.New("x") })
		a.ctrl.run(ctx, "sync-services", func(context.Context) error { return nil })
		a.updateMetrics(ctx)
		names := []string{metrics.NameEndpoints, metrics.NameServices, metrics.NameHostRoutingMode, metrics.NameDatapathFallback, metrics.NameControllerFailures}
		want := map[string]float64{
			"glia_endpoints{}":                                            2,
			"glia_services{}":                                             0, // no watcher: no Services
			"glia_host_routing_mode{mode=BPF}":                            0,
			"glia_host_routing_mode{mode=Legacy}":                         1,
			"glia_datapath_fallback{key=" + config.KeyBPFMasquerade + "}": 1,
			"glia_controller_failures{name=sync-nodes}":                   2,
			"glia_controller_failures{name=sync-services}":                0,
		}
		if diff := cmp.Diff(want, gauges(t, a.metrics, names...)); diff != "" {
			t.Errorf("metrics (-want +got):\n%s", diff)
		}

		// The node switches to BPF host routing: the fallback series goes away.
		a.modes = config.Modes{HostRouting: config.HostRouting{Mode: config.HostRoutingBPF}}
		a.updateMetrics(ctx)
		want = map[string]float64{
			"glia_endpoints{}":                             2,
			"glia_services{}":                              0,
			"glia_host_routing_mode{mode=BPF}":             1,
			"glia_host_routing_mode{mode=Legacy}":          0,
			"glia_controller_failures{name=sync-nodes}":    2,
			"glia_controller_failures{name=sync-services}": 0,
		}
		if diff := cmp.Diff(want, gauges(t, a.metrics, names...)); diff != "" {
			t.Errorf("metrics after the switch (-want +got):\n%s", diff)
		}
	})
}

// verifyingDP is a datapath that reads its service maps back.
type verifyingDP struct {
	fakeDP
	verified int
	err      error
}

func (v *verifyingDP) VerifyServices(context.Context) error {
	v.verified++
	return v.err
}

func TestVerifyServices(t *testing.T) {
	ctx := context.Background()
	v := &verifyingDP{}
	a := &Agent{log: discard(), ctrl: newControllers(), dp: v, modes: config.Modes{KubeProxyReplacement: true}}
	a.verifyServices(ctx)
	if v.verified != 1 || a.servicesFailed {
		t.Fatalf("verified %d times, servicesFailed %t; want 1, false", v.verified, a.servicesFailed)
	}

	// A failure is counted as the controller's and brings the next full
	// pass forward.
	v.err = errors.New("map walk interrupted")
	a.verifyServices(ctx)
	var failures int
	for _, c := range a.ctrl.list() {
		if c.Name == "verify-services" {
			failures = c.Failures
		}
	}
	if failures != 1 || !a.servicesFailed {
		t.Fatalf("verify-services failures = %d, servicesFailed %t; want 1, true", failures, a.servicesFailed)
	}

	// Without kube-proxy replacement kube-proxy owns Services: no walk.
	v.verified = 0
	a.modes.KubeProxyReplacement = false
	a.verifyServices(ctx)
	// A datapath that cannot read its maps back (legacy) is left alone.
	a.modes.KubeProxyReplacement = true
	a.dp = &fakeDP{}
	a.verifyServices(ctx)
	if v.verified != 0 {
		t.Fatalf("%d verifications without kube-proxy replacement or a verifier", v.verified)
	}
}

func TestFullPassDue(t *testing.T) {
	a := &Agent{}
	var full []int
	for pass := 1; pass <= 3*servicePassEvery; pass++ {
		if a.fullPassDue(pass) {
			full = append(full, pass)
		}
	}
	if want := []int{servicePassEvery, 2 * servicePassEvery, 3 * servicePassEvery}; !slices.Equal(full, want) {
		t.Fatalf("full passes at %v, want %v", full, want)
	}
	a.servicesFailed = true
	if !a.fullPassDue(1) {
		t.Fatal("after a failed Service update the next node pass is not a full pass")
	}
}
