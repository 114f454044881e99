package image

import (
	"archive/tar"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestRegistryRoundTrip pushes glia's image (fixture binaries, this host's
// iptables/nftables) to go-containerregistry's registry served on
// loopback, pulls it back by tag and checks digest, config and files.
func TestRegistryRoundTrip(t *testing.T) {
	requireHostPackages(t)
	o := fixtureOptions(t)
	img, _, err := Glia(context.Background(), o)
	if err != nil {
		t.Fatalf("Glia: %v", err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u.Host, "127.0.0.1:") {
		t.Fatalf("registry at %s, want loopback", u.Host)
	}
	ref, err := name.NewTag(u.Host+"/glia:"+o.Version, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	got, err := pulled.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("pulled digest %s, pushed %s", got, want)
	}

	cf, err := pulled.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if diff := cmp.Diff([]string{"/usr/bin/glia-agent"}, cf.Config.Cmd); diff != "" {
		t.Errorf("Cmd (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, cf.Config.Env); diff != "" {
		t.Errorf("Env (-want +got):\n%s", diff)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.title":       "glia",
		"org.opencontainers.image.description": "glia agent, CLI and CNI plugin, with the iptables/nftables userspace",
		"org.opencontainers.image.version":     "0.0.0-test",
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.created":     "2023-11-14T22:13:20Z",
	}
	if diff := cmp.Diff(wantLabels, cf.Config.Labels); diff != "" {
		t.Errorf("Labels (-want +got):\n%s", diff)
	}
	if !cf.Created.Time.Equal(o.Created) {
		t.Errorf("created %v, want %v", cf.Created.Time, o.Created)
	}

	fsys := flatten(t, pulled)
	for _, b := range Binaries {
		p := "/usr/bin/" + b
		e, ok := fsys[p]
		if !ok {
			t.Errorf("%s missing", p)
			continue
		}
		if e.hdr.Typeflag != tar.TypeReg || e.hdr.Mode&0o111 != 0o111 {
			t.Errorf("%s: type %c mode %o, want an executable regular file", p, e.hdr.Typeflag, e.hdr.Mode)
		}
		if e.sha256 != fileSHA256(t, filepath.Join(o.BinDir, b)) {
			t.Errorf("%s differs from %s", p, filepath.Join(o.BinDir, b))
		}
	}
	// What PATH lookups and the loader find inside the image.
	execs := append(slicesClone(Userspace.Paths), "/usr/sbin/xtables-nft-multi", "/usr/sbin/xtables-legacy-multi", "/lib64/ld-linux-x86-64.so.2")
	libs := []string{
		"/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libxtables.so.12",
		"/lib/x86_64-linux-gnu/libip4tc.so.2", "/lib/x86_64-linux-gnu/libip6tc.so.2",
		"/lib/x86_64-linux-gnu/libnftables.so.1", "/lib/x86_64-linux-gnu/libnftnl.so.11",
		"/lib/x86_64-linux-gnu/libmnl.so.0",
		"/usr/lib/x86_64-linux-gnu/xtables/libxt_MASQUERADE.so", "/usr/lib/x86_64-linux-gnu/xtables/libxt_comment.so",
		"/usr/lib/x86_64-linux-gnu/xtables/libipt_icmp.so",
	}
	for _, p := range append(execs, libs...) {
		real := resolveIn(fsys, p)
		if real == "" {
			t.Errorf("%s does not resolve inside the image", p)
			continue
		}
		e := fsys[real]
		if e.hdr.Typeflag != tar.TypeReg {
			t.Errorf("%s resolves to %s, type %c, want a regular file", p, real, e.hdr.Typeflag)
		}
	}
	for _, p := range execs {
		if real := resolveIn(fsys, p); real != "" && fsys[real].hdr.Mode&0o111 == 0 {
			t.Errorf("%s (%s) is not executable", p, real)
		}
	}
	if real := resolveIn(fsys, "/usr/sbin/iptables"); !strings.HasPrefix(filepath.Base(real), "xtables-") {
		t.Errorf("/usr/sbin/iptables resolves to %q, want an xtables multi-binary", real)
	}
	// No symlink in the image dangles.
	for p, e := range fsys {
		if e.hdr.Typeflag == tar.TypeSymlink && resolveIn(fsys, p) == "" {
			t.Errorf("symlink %s -> %s dangles inside the image", p, e.hdr.Linkname)
		}
	}
	for _, d := range []string{"/tmp", "/run"} {
		if e, ok := fsys[d]; !ok || e.hdr.Typeflag != tar.TypeDir {
			t.Errorf("directory %s missing", d)
		}
	}
	if fsys["/tmp"].hdr != nil && fsys["/tmp"].hdr.Mode != 0o1777 {
		t.Errorf("/tmp mode %o, want 1777", fsys["/tmp"].hdr.Mode)
	}
}
