package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

var (
	fixtureBinOnce sync.Once
	fixtureBinTmp  string // removed by TestMain
	fixtureBinDir  string
	fixtureBinErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureBinTmp != "" {
		_ = os.RemoveAll(fixtureBinTmp)
	}
	os.Exit(code)
}

// fixtureBins builds, once per test run, a tiny static Go program and puts
// it in a directory as glia, glia-agent and glia-cni (the real ones take
// a minute to link; the image treats them all alike). Each prints
// "fixture <its name>".
func fixtureBins(t *testing.T) string {
	t.Helper()
	fixtureBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "glia-image-fixture-")
		if err != nil {
			fixtureBinErr = err
			return
		}
		fixtureBinTmp = dir
		src := filepath.Join(dir, "src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			fixtureBinErr = err
			return
		}
		files := map[string]string{
			"go.mod":  "module fixture\n\ngo 1.22\n",
			"main.go": "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"path/filepath\"\n)\n\nfunc main() { fmt.Println(\"fixture\", filepath.Base(os.Args[0])) }\n",
		}
		for n, c := range files {
			if err := os.WriteFile(filepath.Join(src, n), []byte(c), 0o644); err != nil {
				fixtureBinErr = err
				return
			}
		}
		bin := filepath.Join(dir, "bin")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", filepath.Join(bin, "fixture"), ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOWORK=off", "GOFLAGS=-buildvcs=false", "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			fixtureBinErr = &buildError{err: err, out: string(out)}
			return
		}
		b, err := os.ReadFile(filepath.Join(bin, "fixture"))
		if err != nil {
			fixtureBinErr = err
			return
		}
		for _, n := range Binaries {
			if err := os.WriteFile(filepath.Join(bin, n), b, 0o755); err != nil {
				fixtureBinErr = err
				return
			}
		}
		fixtureBinDir = bin
	})
	if fixtureBinErr != nil {
		t.Fatalf("build the fixture binary: %v", fixtureBinErr)
	}
	return fixtureBinDir
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

// fixtureOptions are Options for glia's image from the fixture binaries and
// the host's packages.
func fixtureOptions(t *testing.T) Options {
	return Options{
		BinDir:     fixtureBins(t),
		Repository: "glia",
		Version:    "0.0.0-test",
		Revision:   "0123456789abcdef0123456789abcdef01234567",
		Created:    time.Unix(1700000000, 0).UTC(),
		Host:       &Debian{Root: "/"},
	}
}

// requireHostPackages fails the test unless the packages the image takes
// from the host are installed (scripts/deps.sh installs them).
func requireHostPackages(t *testing.T) {
	t.Helper()
	for _, p := range Userspace.Packages {
		if _, err := DpkgQueryList(context.Background(), p); err != nil {
			t.Fatalf("the image takes Debian package %s from this host: %v", p, err)
		}
	}
}

// fsEntry is one entry of a flattened image.
type fsEntry struct {
	hdr    *tar.Header
	sha256 [32]byte
}

// flatten reads the image's flattened file system (mutate.Extract).
func flatten(t *testing.T, img v1.Image) map[string]fsEntry {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]fsEntry{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read the flattened image: %v", err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		out["/"+path.Clean(hdr.Name)] = fsEntry{hdr: hdr, sha256: sum}
	}
	return out
}

// resolveIn follows p's symlinks inside the flattened image fsys and
// returns the path of what it finally names, or "" when a link dangles
// (or loops) there.
func resolveIn(fsys map[string]fsEntry, p string) string {
	cur := "/"
	parts := splitPath(p)
	for hops := 0; len(parts) > 0; {
		next := path.Join(cur, parts[0])
		parts = parts[1:]
		e, ok := fsys[next]
		if !ok {
			return ""
		}
		if e.hdr.Typeflag != tar.TypeSymlink {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return ""
		}
		target := e.hdr.Linkname
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		parts = append(splitPath(target), parts...)
		cur = "/"
	}
	return cur
}

func splitPath(p string) []string {
	p = path.Clean("/" + p)
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

func fileSHA256(t *testing.T, file string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
