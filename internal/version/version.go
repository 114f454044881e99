// Package version is the build information of glia's binaries, stamped once
// at build time: the Makefile sets version and commit with
//
//	-ldflags "-X glia.dev/glia/internal/version.version=0.1.0 -X glia.dev/glia/internal/version.commit=<git sha>"
//
// for every binary `make build` and `make image` make. A plain `go build`
// says "dev", and takes the commit from the VCS information the Go
// toolchain records (with "-dirty" when the tree had changes), or "unknown".
package version

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by -ldflags -X at build time; empty otherwise.
var (
	version string
	commit  string
)

// Info is what a binary says about its build.
type Info struct {
	// Version is the release, e.g. "0.1.0"; "dev" when not stamped.
	Version string `json:"version"`
	// Commit is the source revision, e.g. "61f425b0c3e1…"; "unknown" when
	// neither stamped nor recorded by the toolchain.
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Get returns this binary's build information.
func Get() Info {
	return info(version, commit, debug.ReadBuildInfo)
}

// info is Get with its inputs given, for tests.
func info(v, c string, read func() (*debug.BuildInfo, bool)) Info {
	i := Info{Version: v, Commit: c, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if i.Version == "" {
		i.Version = "dev"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
		if bi, ok := read(); ok {
			rev, dirty := "", false
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if rev != "" {
				i.Commit = rev
				if dirty {
					i.Commit += "-dirty"
				}
			}
		}
	}
	return i
}

// Short is the commit cut to 12 characters (keeping a "-dirty" mark), as
// tables print it.
func (i Info) Short() string { return ShortCommit(i.Commit) }

// ShortCommit cuts a commit to 12 characters, keeping a "-dirty" mark.
func ShortCommit(c string) string {
	const n = 12
	rev, dirty := c, ""
	if r, ok := strings.CutSuffix(c, "-dirty"); ok {
		rev, dirty = r, "-dirty"
	}
	if len(rev) > n && isHex(rev) {
		rev = rev[:n]
	}
	return rev + dirty
}

// String is the one-line form: "0.1.0 (commit 61f425b0c3e1, go1.26.8 linux/amd64)".
func (i Info) String() string {
	return i.Version + " (commit " + i.Short() + ", " + i.GoVersion + " " + i.Platform + ")"
}

func isHex(s string) bool {
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}
