package podinit

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestParseRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"full", Options{Hostname: "web-1", ResolvConf: "/s/resolv", Hosts: "/s/hosts", HostnameFile: "/s/hostname",
			CgroupProcs: "/cg/cgroup.procs", Dir: "/tmp", Scratch: "/s/c/web", ScratchBytes: 1 << 20, Privileged: true,
			CapAdd: []string{"NET_ADMIN"}, CapDrop: []string{"ALL"}, NoNewPrivs: true, ReadOnlyRoot: true,
			Mounts: []Mount{
				{Source: "/var/lib/glia", Target: "/var/lib/glia", Propagation: PropagationShared},
				{Source: "/lab/bin/glia", Target: "/usr/bin/glia", ReadOnly: true},
			},
			Argv: []string{"sh", "-c", "echo --hostname"}}},
		{"minimal", Options{Scratch: "/s", Argv: []string{"sleep", "1"}}},
		{"program flags after --", Options{Scratch: "/s", Hostname: "x", Argv: []string{"curl", "--spec", "-s"}}},
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
	tests := []struct {
		args []string
		want string
	}{
		{nil, "--spec is required"},
		{Options{Scratch: "/s"}.Args(), "no program"},
		{[]string{"--bogus", "1", "--", "true"}, "flag provided but not defined"},
		{[]string{"--spec", "{", "--", "true"}, "decode --spec"},
		{Options{Argv: []string{"true"}}.Args(), "no scratch directory"},
		{Options{Scratch: "/s", CapAdd: []string{"FLY"}, Argv: []string{"true"}}.Args(), `unknown capability "FLY"`},
		{Options{Scratch: "/s", Mounts: []Mount{{Source: "/a", Target: "/b", Propagation: "sideways"}}, Argv: []string{"true"}}.Args(), "unknown propagation"},
		{Options{Scratch: "/s", Mounts: []Mount{{Source: "/a", Target: "b"}}, Argv: []string{"true"}}.Args(), "absolute target"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.args)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestMainRefusesSharedNamespaces(t *testing.T) {
	// The test process shares its mount namespace with its parent (go test),
	// so Main must refuse before touching any mount.
	scratch := t.TempDir()
	err := Main(Options{Scratch: scratch, ResolvConf: "/nonexistent", Argv: []string{"true"}}.Args())
	if err == nil || !strings.Contains(err.Error(), "refusing to run") {
		unix.Unmount(scratch, unix.MNT_DETACH) // undo what must not have happened
		t.Fatalf("Main in its parent's mount namespace = %v, want a refusal", err)
	}
}

func TestCapabilitySet(t *testing.T) {
	names := func(set map[int]bool) []string {
		var out []string
		for i, n := range capNames {
			if set[i] {
				out = append(out, n)
			}
		}
		return out
	}
	tests := []struct {
		name      string
		add, drop []string
		want      []string
	}{
		{"default", nil, nil, []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP"}},
		{"drop all add one", []string{"NET_ADMIN"}, []string{"ALL"}, []string{"NET_ADMIN"}},
		{"CAP_ prefix and case", []string{"cap_net_admin"}, []string{"CAP_MKNOD", "NET_RAW", "KILL", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE", "SETFCAP"}, []string{"NET_ADMIN"}},
		{"drop beats add", []string{"NET_ADMIN"}, []string{"NET_ADMIN", "ALL"}, nil},
		{"add all", []string{"ALL"}, nil, capNames},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := CapabilitySet(tt.add, tt.drop)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, names(set)); diff != "" {
				t.Errorf("capabilities (-want +got):\n%s", diff)
			}
		})
	}
}
