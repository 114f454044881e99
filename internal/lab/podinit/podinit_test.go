package podinit

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"full", Options{Hostname: "web-1", ResolvConf: "/s/resolv", Hosts: "/s/hosts", HostnameFile: "/s/hostname", CgroupProcs: "/cg/cgroup.procs", Dir: "/tmp", Argv: []string{"sh", "-c", "echo --hostname"}}},
		{"minimal", Options{Argv: []string{"sleep", "1"}}},
		{"program flags after --", Options{Hostname: "x", Argv: []string{"curl", "--resolv", "-s"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.o.Args())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.o, got); diff != "" {
				t.Errorf("Parse(Args()) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"--hostname", "x", "--"}, {"--bogus", "1", "--", "true"}} {
		if _, err := Parse(args); err == nil {
			t.Errorf("Parse(%q) succeeded", args)
		}
	}
}

func TestMainRefusesSharedNamespaces(t *testing.T) {
	// The test process shares its mount namespace with its parent (go test),
	// so Main must refuse before touching any mount.
	err := Main([]string{"--resolv", "/nonexistent", "--", "true"})
	if err == nil {
		t.Fatal("Main ran in its parent's mount namespace")
	}
	t.Log(err)
}
