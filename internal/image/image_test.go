package image

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// testInputs is a small image: a file read from disk, one given inline, a
// directory with special bits and a symlink.
type testInputs struct {
	layers []Layer
	cfg    Config
}

func newTestInputs(t *testing.T) testInputs {
	t.Helper()
	src := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(src, []byte("#!tool v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return testInputs{
		layers: []Layer{
			{Name: "base", Entries: []Entry{
				{Path: "/usr/lib/x/data", Type: File, Mode: 0o644, Data: []byte("data v1")},
				{Path: "/tmp", Type: Dir, Mode: 0o777 | fs.ModeSticky},
				{Path: "/lib", Type: Symlink, Target: "usr/lib"},
			}},
			{Name: "tools", Entries: []Entry{
				{Path: "/usr/bin/tool", Type: File, Mode: 0o755, Source: src},
			}},
		},
		cfg: Config{
			Cmd:     []string{"/usr/bin/tool"},
			Env:     []string{"PATH=/usr/bin"},
			Labels:  map[string]string{"org.opencontainers.image.version": "1"},
			Created: time.Unix(1700000000, 0),
		},
	}
}

func buildDigests(t *testing.T, in testInputs) (v1.Hash, []v1.Hash) {
	t.Helper()
	img, err := Build(in.layers, in.cfg)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var layers []v1.Hash
	for _, l := range m.Layers {
		layers = append(layers, l.Digest)
	}
	return d, layers
}

func TestBuildReproducible(t *testing.T) {
	tests := []struct {
		name string
		// change alters the inputs (after a first build).
		change func(t *testing.T, in *testInputs)
		// same: the image digest stays the same.
		same bool
		// sameLayers: the layer digests stay the same.
		sameLayers bool
	}{
		{name: "nothing changed", change: func(*testing.T, *testInputs) {}, same: true, sameLayers: true},
		{name: "entries listed in another order", same: true, sameLayers: true, change: func(_ *testing.T, in *testInputs) {
			e := in.layers[0].Entries
			e[0], e[2] = e[2], e[0]
		}},
		{name: "source file touched and made readable to all", same: true, sameLayers: true, change: func(t *testing.T, in *testInputs) {
			src := in.layers[1].Entries[0].Source
			if err := os.Chtimes(src, time.Now(), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(src, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "same content from another source path", same: true, sameLayers: true, change: func(t *testing.T, in *testInputs) {
			other := filepath.Join(t.TempDir(), "elsewhere")
			b, err := os.ReadFile(in.layers[1].Entries[0].Source)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(other, b, 0o644); err != nil {
				t.Fatal(err)
			}
			in.layers[1].Entries[0].Source = other
		}},
		{name: "source file content changed", change: func(t *testing.T, in *testInputs) {
			if err := os.WriteFile(in.layers[1].Entries[0].Source, []byte("#!tool v2\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "inline content changed", change: func(_ *testing.T, in *testInputs) {
			in.layers[0].Entries[0].Data = []byte("data v2")
		}},
		{name: "mode changed", change: func(_ *testing.T, in *testInputs) {
			in.layers[1].Entries[0].Mode = 0o750
		}},
		{name: "symlink target changed", change: func(_ *testing.T, in *testInputs) {
			in.layers[0].Entries[2].Target = "/usr/lib"
		}},
		{name: "label changed", sameLayers: true, change: func(_ *testing.T, in *testInputs) {
			in.cfg.Labels["org.opencontainers.image.version"] = "2"
		}},
		{name: "creation time changed", sameLayers: true, change: func(_ *testing.T, in *testInputs) {
			in.cfg.Created = in.cfg.Created.Add(time.Second)
		}},
		{name: "command changed", sameLayers: true, change: func(_ *testing.T, in *testInputs) {
			in.cfg.Cmd = []string{"/usr/bin/tool", "-v"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newTestInputs(t)
			d1, l1 := buildDigests(t, in)
			tt.change(t, &in)
			d2, l2 := buildDigests(t, in)
			if (d1 == d2) != tt.same {
				t.Errorf("image digest before %s, after %s: want same=%v", d1, d2, tt.same)
			}
			if (cmp.Diff(l1, l2) == "") != tt.sameLayers {
				t.Errorf("layer digests before %v, after %v: want same=%v", l1, l2, tt.sameLayers)
			}
		})
	}
}

func TestBuildConfig(t *testing.T) {
	in := newTestInputs(t)
	img, err := Build(in.layers, in.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if !cf.Created.Time.Equal(in.cfg.Created) {
		t.Errorf("created %v, want %v", cf.Created.Time, in.cfg.Created)
	}
	if diff := cmp.Diff(in.cfg.Cmd, cf.Config.Cmd); diff != "" {
		t.Errorf("Cmd (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(in.cfg.Env, cf.Config.Env); diff != "" {
		t.Errorf("Env (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(in.cfg.Labels, cf.Config.Labels); diff != "" {
		t.Errorf("Labels (-want +got):\n%s", diff)
	}
	if len(cf.History) != 2 || cf.History[0].Comment != "base" || cf.History[1].Comment != "tools" {
		t.Errorf("history %+v, want one entry per layer (base, tools)", cf.History)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Config.MediaType != "application/vnd.oci.image.config.v1+json" {
		t.Errorf("media types %s, %s: want OCI manifest and config", m.MediaType, m.Config.MediaType)
	}
	for _, l := range m.Layers {
		if l.MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
			t.Errorf("layer media type %s, want OCI gzip layer", l.MediaType)
		}
	}
}

// TestLayerTar checks the tar stream of a layer: parents added, entries
// sorted, owner root, every time Epoch and nothing else that varies.
func TestLayerTar(t *testing.T) {
	in := newTestInputs(t)
	img, err := Build(in.layers, in.cfg)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type ent struct {
		Name     string
		Type     byte
		Mode     int64
		Linkname string
		Content  string
	}
	var got []ent
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ent{hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Linkname, string(b)})
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: owner %d:%d (%q:%q), want 0:0 without names", hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname)
		}
		if !hdr.ModTime.Equal(Epoch) || !hdr.AccessTime.IsZero() || !hdr.ChangeTime.IsZero() {
			t.Errorf("%s: times m=%v a=%v c=%v, want m=%v and no others", hdr.Name, hdr.ModTime, hdr.AccessTime, hdr.ChangeTime, Epoch)
		}
		if len(hdr.PAXRecords) != 0 || len(hdr.Xattrs) != 0 { //nolint:staticcheck // Xattrs: checking nothing sneaks in
			t.Errorf("%s: PAX records %v, want none", hdr.Name, hdr.PAXRecords)
		}
	}
	want := []ent{
		{"lib", tar.TypeSymlink, 0o777, "usr/lib", ""},
		{"tmp/", tar.TypeDir, 0o1777, "", ""},
		{"usr/", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/x/", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/x/data", tar.TypeReg, 0o644, "", "data v1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layer entries (-want +got):\n%s", diff)
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name    string
		layers  []Layer
		cfg     func(*Config)
		wantErr string
	}{
		{name: "relative path", layers: []Layer{{Name: "l", Entries: []Entry{{Path: "usr/bin/x", Type: File}}}}, wantErr: `entry path "usr/bin/x": want an absolute, clean path`},
		{name: "unclean path", layers: []Layer{{Name: "l", Entries: []Entry{{Path: "/usr/../x", Type: File}}}}, wantErr: "want an absolute, clean path"},
		{name: "root itself", layers: []Layer{{Name: "l", Entries: []Entry{{Path: "/", Type: Dir}}}}, wantErr: "below /"},
		{name: "file type bits in mode", layers: []Layer{{Name: "l", Entries: []Entry{{Path: "/x", Type: File, Mode: fs.ModeDir | 0o755}}}}, wantErr: "holds more than permission bits"},
		{name: "symlink without target", layers: []Layer{{Name: "l", Entries: []Entry{{Path: "/x", Type: Symlink}}}}, wantErr: "symlink without a target"},
		{name: "both source and data", layers: []Layer{{Name: "l", Entries: []Entry{{Path: "/x", Type: File, Source: "/etc/hostname", Data: []byte("x")}}}}, wantErr: "both Source and Data"},
		{name: "path twice across layers", layers: []Layer{
			{Name: "a", Entries: []Entry{{Path: "/x", Type: File}}},
			{Name: "b", Entries: []Entry{{Path: "/x", Type: Symlink, Target: "y"}}},
		}, wantErr: `layer "b": /x defined twice (file and symlink)`},
		{name: "file under a symlink", layers: []Layer{
			{Name: "a", Entries: []Entry{{Path: "/lib", Type: Symlink, Target: "usr/lib"}}},
			{Name: "b", Entries: []Entry{{Path: "/lib/libc.so.6", Type: File}}},
		}, wantErr: "/lib/libc.so.6 lies under /lib, which is a symlink"},
		{name: "file under a file", layers: []Layer{{Name: "a", Entries: []Entry{{Path: "/a", Type: File}, {Path: "/a/b", Type: File}}}}, wantErr: "/a/b lies under /a, which is a file"},
		{name: "missing source", layers: []Layer{{Name: "a", Entries: []Entry{{Path: "/a", Type: File, Source: "/nonexistent/glia-image-test"}}}}, wantErr: "/a: open /nonexistent/glia-image-test"},
		{name: "no creation time", layers: []Layer{{Name: "a", Entries: []Entry{{Path: "/a", Type: Dir, Mode: 0o755}}}}, cfg: func(c *Config) { c.Created = time.Time{} }, wantErr: "Created is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Created: Epoch}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			_, err := Build(tt.layers, cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Build: error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestBuildAllowsSameDirTwice(t *testing.T) {
	layers := []Layer{
		{Name: "a", Entries: []Entry{{Path: "/run", Type: Dir, Mode: 0o755}}},
		{Name: "b", Entries: []Entry{{Path: "/run", Type: Dir, Mode: 0o755}}},
	}
	if _, err := Build(layers, Config{Created: Epoch}); err != nil {
		t.Fatalf("the same directory in two layers: %v", err)
	}
}

// TestShippedBinariesDoNotImportImage: go-containerregistry (and this
// package) stay out of the binaries the image ships.
func TestShippedBinariesDoNotImportImage(t *testing.T) {
	args := []string{"list", "-deps"}
	for _, b := range Binaries {
		args = append(args, "glia.dev/glia/cmd/"+b)
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list -deps printed %d packages: %q", len(deps), deps)
	}
	for _, p := range deps {
		if strings.HasPrefix(p, "github.com/google/go-containerregistry/") || p == "glia.dev/glia/internal/image" {
			t.Errorf("%s is in the import graph of %v", p, Binaries)
		}
	}
}
