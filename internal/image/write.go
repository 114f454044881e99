package image

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"glia.dev/glia/internal/atomicfile"
)

// WriteLayout writes img as an OCI image layout in dir, replacing what was
// there: the index names the image by tag's tag (annotation
// org.opencontainers.image.ref.name, as `skopeo copy oci:DIR:TAG` expects).
// The new layout is written next to dir and renamed into place, so dir
// holds either the old layout or the new one, never a half-written one.
func WriteLayout(dir string, tag name.Tag, img v1.Image) error {
	parent, base := filepath.Split(filepath.Clean(dir))
	if parent == "" {
		parent = "."
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+base+atomicfile.TempPrefix)
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("oci layout %s: %w", tmp, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return fmt.Errorf("oci layout %s: %w", tmp, err)
	}
	// go-containerregistry writes files 0755 (less the umask); make them
	// what they are: data.
	if err := filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(p, mode)
	}); err != nil {
		return fmt.Errorf("oci layout %s: %w", tmp, err)
	}
	// Swap: the old layout moves aside, the new one in, the old one goes.
	old := ""
	if _, err := os.Stat(dir); err == nil {
		if old, err = os.MkdirTemp(parent, "."+base+atomicfile.TempPrefix+"old-"); err != nil {
			return err
		}
		if err := os.Rename(dir, filepath.Join(old, base)); err != nil {
			return fmt.Errorf("oci layout: move the old one aside: %w", err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	if old != "" {
		if err := os.RemoveAll(old); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(parent)
}

// WriteTarball writes img, tagged tag, as a tarball in the format of
// `docker save` (manifest.json, config, gzipped layers), which
// `docker load`, `ctr images import`, `crane push` and `skopeo copy
// docker-archive:` read. The file is replaced atomically.
func WriteTarball(file string, tag name.Tag, img v1.Image) (err error) {
	dir, base := filepath.Split(filepath.Clean(file))
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+base+atomicfile.TempPrefix+"*")
	if err != nil {
		return fmt.Errorf("image tarball: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := tarball.Write(tag, img, f); err != nil {
		return fmt.Errorf("image tarball %s: %w", file, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), file); err != nil {
		return fmt.Errorf("image tarball: %w", err)
	}
	return atomicfile.SyncDir(dir)
}

// Size is the image's size as a registry stores it: manifest, config and
// compressed layers.
func Size(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}
