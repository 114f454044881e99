package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/metrics"
	"glia.dev/glia/internal/state"
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
	node := datapath.LocalNode{Name: "lab-node-1", IP: netip.MustParseAddr("198.18.0.11"), Device: "eth0",
		PodCIDR: netip.MustParsePrefix("198.19.1.0/24"), ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16")}
	full := config.KernelProbe{TCX: true, BPFRedirectPeer: true, BPFRedirectNeigh: true, FIBLookup: true, VXLAN: true}
	decide := func(cm map[string]string) config.Modes {
		c, _, err := config.Resolve(config.Inputs{ConfigMap: cm})
		if err != nil {
			t.Fatal(err)
		}
		return config.Decide(c.Typed(), full)
	}
	tests := []struct {
		name    string
		modes   config.Modes
		bpffs   string
		want    string
		wantErr string
	}{
		{name: "defaults: legacy", modes: decide(nil), want: "legacy"},
		{name: "kube-proxy replacement: bpf", modes: decide(map[string]string{config.KeyKubeProxyReplacement: "true"}), want: "bpf"},
		{name: "tunnel: bpf", modes: decide(map[string]string{config.KeyRoutingMode: "tunnel"}), want: "bpf"},
		{name: "bpf without a pin directory", modes: decide(map[string]string{config.KeyKubeProxyReplacement: "true"}), bpffs: "-",
			wantErr: "bpffs"},
		{name: "no decision", modes: config.Modes{}, wantErr: `no datapath ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "legacy" {
				if _, err := exec.LookPath("iptables"); err != nil {
					t.Skip("the legacy datapath needs the iptables command, not installed here")
				}
			}
			opts := datapath.Options{Modes: tt.modes, BPFFSDir: "/sys/fs/bpf/glia/lab-node-1", StateDir: "/var/lib/glia/datapath", MTU: 1500}
			if tt.bpffs == "-" {
				opts.BPFFSDir = ""
			}
			dp, err := newDatapath(discard(), node, opts)
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
				t.Errorf("newDatapath built %q, want %q", dp.Name(), tt.want)
			}
		})
	}
}

func TestServicesToWire(t *testing.T) {
	tables, err := state.New()
	if err != nil {
		t.Fatal(err)
	}
	txn := tables.DB.WriteTxn(tables.Services)
	tables.Services.Insert(txn, &state.Service{Name: state.ServiceName{Namespace: "default", Name: "web"}, Frontends: []state.Frontend{
		{PortName: "http", Protocol: "TCP", Addr: netip.MustParseAddrPort("198.18.128.20:80"), NodePort: 30080,
			Backends: []state.Backend{{Addr: netip.MustParseAddrPort("198.19.1.5:8080"), NodeName: "n1", Ready: true},
				{Addr: netip.MustParseAddrPort("198.19.2.5:8080"), NodeName: "n2", Terminating: true}}}}})
	tables.Services.Insert(txn, &state.Service{Name: state.ServiceName{Namespace: "kube-system", Name: "kube-dns"}, Frontends: []state.Frontend{
		{PortName: "dns-tcp", Protocol: "TCP", Addr: netip.MustParseAddrPort("198.18.128.10:53")},
		{PortName: "dns", Protocol: "UDP", Addr: netip.MustParseAddrPort("198.18.128.10:53")}}})
	txn.Commit()
	want := []api.Service{
		{Name: "kube-system/kube-dns:dns-tcp", Type: "ClusterIP", Frontend: "198.18.128.10:53", Protocol: "TCP", Backends: []api.ServiceBackend{}},
		{Name: "default/web:http", Type: "NodePort", Frontend: "198.18.128.20:80", NodePort: 30080, Protocol: "TCP", Backends: []api.ServiceBackend{
			{Address: "198.19.1.5:8080", Node: "n1", Ready: true}, {Address: "198.19.2.5:8080", Node: "n2", Terminating: true}}},
		{Name: "kube-system/kube-dns:dns", Type: "ClusterIP", Frontend: "198.18.128.10:53", Protocol: "UDP", Backends: []api.ServiceBackend{}},
	}
	if diff := cmp.Diff(want, servicesToWire(tables.Services.All(tables.DB.ReadTxn()))); diff != "" {
		t.Errorf("servicesToWire (-want +got):\n%s", diff)
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
			v := mt.GetGauge().GetValue()
			if mt.GetCounter() != nil {
				v = mt.GetCounter().GetValue()
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = v
		}
	}
	return out
}
