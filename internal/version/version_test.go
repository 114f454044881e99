package version

import (
	"runtime/debug"
	"testing"
)

func TestInfo(t *testing.T) {
	build := func(settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) { return &debug.BuildInfo{Settings: settings}, true }
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	const sha = "61f425b0c3e1d2f3a4b5c6d7e8f90a1b2c3d4e5f"
	tests := []struct {
		name            string
		v, c            string
		read            func() (*debug.BuildInfo, bool)
		wantV, wantC    string
		wantShortCommit string
	}{
		{"stamped", "0.1.0", sha, none, "0.1.0", sha, "61f425b0c3e1"},
		{"stamped wins over vcs", "0.1.0", sha, build(debug.BuildSetting{Key: "vcs.revision", Value: "ffff"}), "0.1.0", sha, "61f425b0c3e1"},
		{"go build in a clean tree", "", "", build(debug.BuildSetting{Key: "vcs.revision", Value: sha}, debug.BuildSetting{Key: "vcs.modified", Value: "false"}),
			"dev", sha, "61f425b0c3e1"},
		{"go build in a dirty tree", "", "", build(debug.BuildSetting{Key: "vcs.revision", Value: sha}, debug.BuildSetting{Key: "vcs.modified", Value: "true"}),
			"dev", sha + "-dirty", "61f425b0c3e1-dirty"},
		{"no vcs information", "", "", build(), "dev", "unknown", "unknown"},
		{"no build information", "", "", none, "dev", "unknown", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := info(tt.v, tt.c, tt.read)
			if i.Version != tt.wantV || i.Commit != tt.wantC || i.Short() != tt.wantShortCommit {
				t.Errorf("got version %q commit %q short %q, want %q %q %q", i.Version, i.Commit, i.Short(), tt.wantV, tt.wantC, tt.wantShortCommit)
			}
			if i.GoVersion == "" || i.Platform == "" {
				t.Errorf("go version %q, platform %q: both must be set", i.GoVersion, i.Platform)
			}
		})
	}
}
