package image

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestRunWritesReadableOutputs: what Run (make image) writes reads back —
// the OCI layout with layout.ImageIndexFromPath, the tarball with
// tarball.ImageFromPath — as the same image; a second Run gives the same
// digest and the same bytes; a Run with another version replaces the
// layout instead of adding to it.
func TestRunWritesReadableOutputs(t *testing.T) {
	requireHostPackages(t)
	dir := t.TempDir()
	o := fixtureOptions(t)
	o.LayoutDir = filepath.Join(dir, "image", "oci")
	o.Tarball = filepath.Join(dir, "image", "glia.tar")
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Tag.String() != "glia:0.0.0-test" {
		t.Errorf("tag %s, want glia:0.0.0-test", res.Tag)
	}

	idx, err := layout.ImageIndexFromPath(o.LayoutDir)
	if err != nil {
		t.Fatalf("read the OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("layout index has %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.Digest != res.Digest {
		t.Errorf("layout holds %s, Run reported %s", desc.Digest, res.Digest)
	}
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != "0.0.0-test" {
		t.Errorf("layout ref.name %q, want the tag 0.0.0-test", got)
	}
	fromLayout, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := fromLayout.Digest(); err != nil || d != res.Digest {
		t.Errorf("image read from the layout: digest %s (%v), want %s", d, err, res.Digest)
	}
	size, err := Size(fromLayout)
	if err != nil || size != res.Size {
		t.Errorf("image read from the layout: size %d (%v), want %d", size, err, res.Size)
	}

	fromTar, err := tarball.ImageFromPath(o.Tarball, nil)
	if err != nil {
		t.Fatalf("read the tarball: %v", err)
	}
	// A docker-save tarball keeps config and layers, not the manifest:
	// compare those.
	wantCfg, _ := fromLayout.ConfigName()
	gotCfg, err := fromTar.ConfigName()
	if err != nil || gotCfg != wantCfg {
		t.Errorf("tarball config %s (%v), layout config %s", gotCfg, err, wantCfg)
	}
	wantLayers, _ := fromLayout.Layers()
	gotLayers, err := fromTar.Layers()
	if err != nil || len(gotLayers) != len(wantLayers) {
		t.Fatalf("tarball has %d layers (%v), layout %d", len(gotLayers), err, len(wantLayers))
	}
	for i := range wantLayers {
		wd, _ := wantLayers[i].Digest()
		gd, err := gotLayers[i].Digest()
		if err != nil || gd != wd {
			t.Errorf("layer %d: tarball %s (%v), layout %s", i, gd, err, wd)
		}
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(o.Tarball) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !cmp.Equal(m[0].RepoTags, []string{"glia:0.0.0-test"}) {
		t.Errorf("tarball manifest.json %+v, want one image tagged glia:0.0.0-test", m)
	}

	// Again: the same digest, the same bytes.
	tar1 := fileSHA256(t, o.Tarball)
	index1 := fileSHA256(t, filepath.Join(o.LayoutDir, "index.json"))
	res2, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("second Run: %v", err)
	}
	if res2.Digest != res.Digest {
		t.Errorf("second Run: digest %s, first %s", res2.Digest, res.Digest)
	}
	if fileSHA256(t, o.Tarball) != tar1 || fileSHA256(t, filepath.Join(o.LayoutDir, "index.json")) != index1 {
		t.Errorf("second Run wrote different bytes")
	}

	// Another version replaces the layout; no blob of the old image stays.
	o.Version = "0.0.0-other"
	res3, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("third Run: %v", err)
	}
	if res3.Digest == res.Digest {
		t.Errorf("another version gave the same digest %s", res3.Digest)
	}
	idx, err = layout.ImageIndexFromPath(o.LayoutDir)
	if err != nil {
		t.Fatal(err)
	}
	if im, err := idx.IndexManifest(); err != nil || len(im.Manifests) != 1 || im.Manifests[0].Digest != res3.Digest {
		t.Errorf("layout after another version: %+v (%v), want only %s", im, err, res3.Digest)
	}
	if _, err := os.Stat(filepath.Join(o.LayoutDir, "blobs", "sha256", res.Digest.Hex)); !os.IsNotExist(err) {
		t.Errorf("the old manifest blob is still in the layout (%v)", err)
	}
	left, err := os.ReadDir(filepath.Dir(o.LayoutDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{"glia.tar", "oci"}, names); diff != "" {
		t.Errorf("files next to the outputs (-want +got; temporary files must not stay):\n%s", diff)
	}
}

// dynamicBins is a bin directory whose glia is a dynamically linked program.
func dynamicBins(t *testing.T) string {
	dir := t.TempDir()
	for _, b := range Binaries {
		src := filepath.Join(fixtureBins(t), b)
		if b == "glia" {
			src = "/usr/sbin/nft"
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, b), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestRunRejects(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Options)
		wantErr string
	}{
		{name: "no version", change: func(o *Options) { o.Version = "" }, wantErr: "image version is empty"},
		{name: "bad tag", change: func(o *Options) { o.Version = "a b" }, wantErr: `image tag "glia:a b"`},
		{name: "no creation time", change: func(o *Options) { o.Created = time.Time{} }, wantErr: "image creation time is not set"},
		{name: "no bin dir", change: func(o *Options) { o.BinDir = "" }, wantErr: "set --bin-dir"},
		{name: "no outputs", change: func(o *Options) { o.Tarball = "" }, wantErr: "set both the OCI layout directory"},
		{name: "binaries not built", change: func(o *Options) { o.BinDir = "/nonexistent" }, wantErr: "/nonexistent/glia: open /nonexistent/glia: no such file or directory (build it first"},
		{name: "dynamic binary", change: func(o *Options) { o.BinDir = dynamicBins(t) }, wantErr: "glia is dynamically linked: build it with CGO_ENABLED=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireHostPackages(t)
			dir := filepath.Join(t.TempDir(), "out")
			o := fixtureOptions(t)
			o.LayoutDir = filepath.Join(dir, "oci")
			o.Tarball = filepath.Join(dir, "glia.tar")
			tt.change(&o)
			_, err := Run(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run: error %v, want one containing %q", err, tt.wantErr)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("a refused Run made %s (%v)", dir, err)
			}
		})
	}
}
