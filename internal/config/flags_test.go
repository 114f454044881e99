package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
)

func TestAddFlags(t *testing.T) {
	fs := pflag.NewFlagSet("glia-agent", pflag.ContinueOnError)
	fs.String("kubeconfig", "", "not a config key")
	explicit := AddFlags(fs)
	if err := fs.Parse([]string{"--mtu=1400", "--kubeconfig=/x", "--enable-bpf-masquerade", "true"}); err != nil {
		t.Fatal(err)
	}
	got := explicit()
	want := map[string]string{KeyMTU: "1400", KeyBPFMasquerade: "true"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("explicit flags (-want +got):\n%s", diff)
	}
	c := mustResolve(t, Inputs{Flags: got})
	if s := c.Source(KeyMTU); s != (Source{Kind: SourceFlag, Name: "--mtu"}) {
		t.Errorf("mtu source = %v", s)
	}
	if s := c.Source(KeyDebug); s.Kind != SourceDefault {
		t.Errorf("debug source = %v, want default", s)
	}
}
