package status

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
)

func TestPending(t *testing.T) {
	// The agent started on the story's unlabelled node: ConfigMap with
	// kube-proxy replacement, the story's node config not selecting it.
	start := config.Inputs{ConfigMap: storyCM, ConfigMapName: "glia-system/glia-config", NodeConfigs: []config.NodeConfig{storyNC}}
	current, _, err := config.Resolve(start)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	with := func(f func(in *config.Inputs)) config.Inputs {
		in := start
		in.ConfigMap = map[string]string{}
		for k, v := range start.ConfigMap {
			in.ConfigMap[k] = v
		}
		f(&in)
		return in
	}
	tests := []struct {
		name      string
		in        config.Inputs
		readErr   error
		want      *api.ConfigPending
		wantError []string // substrings of Error
	}{
		{name: "no change", in: start},
		{name: "unrelated label: no change", in: with(func(in *config.Inputs) { in.NodeLabels = map[string]string{"zone": "a"} })},
		{
			name: "a change from the ConfigMap",
			in:   with(func(in *config.Inputs) { in.ConfigMap[config.KeyBPFMasquerade] = "true" }),
			want: &api.ConfigPending{Changes: []api.PendingChange{{Key: config.KeyBPFMasquerade, From: "false", To: "true",
				Source: "ConfigMap glia-system/glia-config", Disruptive: mustKey(t, config.KeyBPFMasquerade).Disruptive}}},
		},
		{
			name: "a GliaNodeConfig selecting the node by a new label",
			in:   with(func(in *config.Inputs) { in.NodeLabels = map[string]string{"io.glia.enable-ebpf": "true"} }),
			want: &api.ConfigPending{Changes: []api.PendingChange{{Key: config.KeyBPFMasquerade, From: "false", To: "true",
				Source: "GliaNodeConfig glia-system/glia-switch-from-iptables-ebpf", Disruptive: mustKey(t, config.KeyBPFMasquerade).Disruptive}}},
		},
		{
			name: "the ConfigMap deleted: back to defaults",
			in:   with(func(in *config.Inputs) { in.ConfigMap = nil }),
			want: &api.ConfigPending{Changes: []api.PendingChange{{Key: config.KeyKubeProxyReplacement, From: "true", To: "false",
				Source: "default", Disruptive: mustKey(t, config.KeyKubeProxyReplacement).Disruptive}}},
		},
		{
			name:      "an invalid value",
			in:        with(func(in *config.Inputs) { in.ConfigMap[config.KeyBPFMasquerade] = "maybe" }),
			wantError: []string{config.KeyBPFMasquerade, `"maybe"`, "ConfigMap glia-system/glia-config"},
		},
		{
			name:      "a node config that does not parse",
			in:        start,
			readErr:   errors.New("GliaNodeConfig glia-system/x: spec.defaults.mtu: got a number, want a string"),
			wantError: []string{"GliaNodeConfig glia-system/x", "spec.defaults.mtu"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Pending(current, tt.in, tt.readErr)
			if tt.wantError != nil {
				if got == nil || got.Error == "" || len(got.Changes) != 0 {
					t.Fatalf("Pending = %+v, want an error and no changes", got)
				}
				for _, s := range tt.wantError {
					if !strings.Contains(got.Error, s) {
						t.Errorf("pending error %q lacks %q", got.Error, s)
					}
				}
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Pending (-want +got):\n%s", diff)
			}
			if !SamePending(tt.want, got) {
				t.Errorf("SamePending(want, got) = false")
			}
		})
	}
}

func mustKey(t *testing.T, name string) config.Key {
	t.Helper()
	k, ok := config.LookupKey(name)
	if !ok {
		t.Fatalf("no config key %s", name)
	}
	return k
}

func TestSamePending(t *testing.T) {
	a := &api.ConfigPending{Changes: []api.PendingChange{{Key: "mtu", From: "1500", To: "9000", Source: "default"}}, Since: now}
	b := &api.ConfigPending{Changes: []api.PendingChange{{Key: "mtu", From: "1500", To: "9000", Source: "default"}}}
	c := &api.ConfigPending{Changes: []api.PendingChange{{Key: "mtu", From: "1500", To: "1400", Source: "default"}}}
	e := &api.ConfigPending{Error: "x"}
	for _, tt := range []struct {
		name string
		x, y *api.ConfigPending
		want bool
	}{
		{"both none", nil, nil, true},
		{"none and some", nil, a, false},
		{"same changes, another time", a, b, true},
		{"another value", a, c, false},
		{"error and changes", a, e, false},
		{"same error", e, &api.ConfigPending{Error: "x"}, true},
	} {
		if got := SamePending(tt.x, tt.y); got != tt.want {
			t.Errorf("%s: SamePending = %t, want %t", tt.name, got, tt.want)
		}
	}
}

func TestRenderPending(t *testing.T) {
	tests := []struct {
		name    string
		pending *api.ConfigPending
		want    string // the line, "" for none
	}{
		{name: "nothing pending: no line"},
		{
			name: "one change",
			pending: &api.ConfigPending{Since: now, Changes: []api.PendingChange{{Key: config.KeyBPFMasquerade, From: "false", To: "true",
				Source: "GliaNodeConfig glia-system/glia-fix-full"}}},
			want: "Config pending: enable-bpf-masquerade false→true (GliaNodeConfig glia-system/glia-fix-full), restart the agent pod to apply\n",
		},
		{
			name: "two changes, one to an empty value",
			pending: &api.ConfigPending{Changes: []api.PendingChange{
				{Key: "devices", From: "eth0", To: "", Source: "default"},
				{Key: "mtu", From: "1500", To: "1400", Source: "ConfigMap glia-system/glia-config"}}},
			want: `Config pending: devices eth0→"" (default), mtu 1500→1400 (ConfigMap glia-system/glia-config), restart the agent pod to apply` + "\n",
		},
		{
			name:    "an invalid pending config",
			pending: &api.ConfigPending{Error: "enable-bpf-masquerade: \"maybe\" (from ConfigMap glia-system/glia-config) must be \"true\" or \"false\"\nsecond problem"},
			want: `Config pending: error: the config sources no longer resolve, the agent would refuse to restart on them (it runs its current config meanwhile): ` +
				`enable-bpf-masquerade: "maybe" (from ConfigMap glia-system/glia-config) must be "true" or "false"; second problem` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := storyStatus(t, nil)
			s.ConfigPending = tt.pending
			var buf bytes.Buffer
			if err := Render(&buf, s, false); err != nil {
				t.Fatal(err)
			}
			out := buf.String()
			var got string
			for _, l := range strings.SplitAfter(out, "\n") {
				if strings.HasPrefix(l, "Config pending:") {
					got += l
				}
			}
			if got != tt.want {
				t.Errorf("pending line = %q, want %q\nwhole status:\n%s", got, tt.want, out)
			}
			// It follows the config sources.
			if tt.want != "" && !strings.Contains(out, "\n"+strings.TrimSuffix(tt.want, "\n")) {
				t.Errorf("no pending line in:\n%s", out)
			}
			if tt.want != "" {
				i, j := strings.Index(out, "Config sources:"), strings.Index(out, "Config pending:")
				if i < 0 || j < i {
					t.Errorf("the pending line does not follow Config sources:\n%s", out)
				}
			}
		})
	}
}
