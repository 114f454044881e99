// Package image assembles glia's OCI image without Docker: from a list of
// files (Entry) grouped into layers, it builds a linux/amd64 image with
// go-containerregistry and writes it as an OCI image layout and as a
// tarball `docker load` and `ctr images import` accept. The result is
// reproducible: the same files (content, mode, symlink targets) and the same
// Config give the same digest, whatever the files' times on disk or the
// order they were listed in.
//
// Debian collects the iptables/nftables userspace (and every shared library
// it loads) from the host's Debian packages; Glia puts it together with
// glia's binaries into the image `glia`.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// EntryType is what an Entry puts into a layer.
type EntryType int

const (
	// File is a regular file; its content comes from Entry.Source or Entry.Data.
	File EntryType = iota
	// Dir is a directory.
	Dir
	// Symlink is a symbolic link to Entry.Target.
	Symlink
)

func (t EntryType) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	}
	return fmt.Sprintf("EntryType(%d)", int(t))
}

// Entry is one file, directory or symlink of the image.
type Entry struct {
	// Path is the absolute, clean path inside the image ("/usr/bin/glia").
	Path string
	Type EntryType
	// Mode holds the permission bits (and setuid/setgid/sticky) only.
	Mode fs.FileMode
	// Source is the host file a File's content is read from...
	Source string
	// ... or, when Source is empty, Data is its content.
	Data []byte
	// Target is where a Symlink points, stored as given.
	Target string
}

// Layer is a set of entries that go into one image layer.
type Layer struct {
	// Name says what the layer holds; it becomes the layer's history entry.
	Name    string
	Entries []Entry
}

// Config is the image's runtime configuration and metadata.
type Config struct {
	Cmd    []string
	Env    []string
	Labels map[string]string
	// Created is the image's creation time (config and history). Layers do
	// not depend on it: every file in them has the time Epoch.
	Created time.Time
}

// Epoch is the modification time of every file in every layer, so a
// layer's digest depends only on the files' content, mode and targets.
var Epoch = time.Unix(0, 0).UTC()

// CompressionLevel is the fixed gzip level of every layer. Go's
// compress/gzip writes a header without name or time, so the same tar at
// the same level always compresses to the same bytes (with the same Go).
const CompressionLevel = gzip.DefaultCompression

// Build assembles the image: one layer per Layer, in order, and the config.
// It checks the layers first (see Validate) and reads every Source file
// once, into memory.
func Build(layers []Layer, cfg Config) (v1.Image, error) {
	if err := Validate(layers); err != nil {
		return nil, err
	}
	if cfg.Created.IsZero() {
		return nil, errors.New("image config: Created is not set (use the last commit's time, or time.Unix(0, 0))")
	}
	var adds []mutate.Addendum
	for _, l := range layers {
		data, err := layerTar(l.Entries)
		if err != nil {
			return nil, fmt.Errorf("layer %q: %w", l.Name, err)
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithCompressionLevel(CompressionLevel), tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
		if err != nil {
			return nil, fmt.Errorf("layer %q: %w", l.Name, err)
		}
		adds = append(adds, mutate.Addendum{
			Layer:     layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: cfg.Created.UTC()}, CreatedBy: "glia-image", Comment: l.Name},
		})
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: cfg.Created.UTC()}
	cf.Config = v1.Config{
		Cmd:    slices.Clone(cfg.Cmd),
		Env:    slices.Clone(cfg.Env),
		Labels: maps.Clone(cfg.Labels),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	return img, nil
}

// Validate checks that every entry is well formed and that the layers
// together describe one consistent tree: no path defined twice (except a
// directory with the same mode), nothing placed under a path that is a
// symlink or a file.
func Validate(layers []Layer) error {
	seen := map[string]Entry{}
	for _, l := range layers {
		for _, e := range l.Entries {
			if err := e.validate(); err != nil {
				return fmt.Errorf("layer %q: %w", l.Name, err)
			}
			if old, ok := seen[e.Path]; ok {
				if old.Type == Dir && e.Type == Dir && old.Mode == e.Mode {
					continue
				}
				return fmt.Errorf("layer %q: %s defined twice (%s and %s): list each path once", l.Name, e.Path, old.Type, e.Type)
			}
			seen[e.Path] = e
		}
	}
	for p := range seen {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if a, ok := seen[d]; ok && a.Type != Dir {
				return fmt.Errorf("%s lies under %s, which is a %s: place it at the path the %s resolves to", p, d, a.Type, a.Type)
			}
		}
	}
	return nil
}

func (e Entry) validate() error {
	if !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path || e.Path == "/" {
		return fmt.Errorf("entry path %q: want an absolute, clean path below /", e.Path)
	}
	if e.Mode&^(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
		return fmt.Errorf("%s: mode %v holds more than permission bits", e.Path, e.Mode)
	}
	switch e.Type {
	case File:
		if e.Source != "" && e.Data != nil {
			return fmt.Errorf("%s: both Source and Data set: give one", e.Path)
		}
	case Dir:
	case Symlink:
		if e.Target == "" {
			return fmt.Errorf("%s: symlink without a target", e.Path)
		}
	default:
		return fmt.Errorf("%s: unknown entry type %v", e.Path, e.Type)
	}
	return nil
}

// layerTar writes entries as a tar stream: every missing parent directory
// added (mode 0755), entries sorted by path, owner root (uid/gid 0, no
// names), every time Epoch, no access or change times.
func layerTar(entries []Entry) ([]byte, error) {
	all := map[string]Entry{}
	for _, e := range entries {
		all[e.Path] = e
		for d := path.Dir(e.Path); d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = Entry{Path: d, Type: Dir, Mode: 0o755}
			}
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range slices.Sorted(maps.Keys(all)) {
		e := all[p]
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    tarMode(e.Mode),
			ModTime: Epoch,
			Format:  tar.FormatPAX,
		}
		var content []byte
		switch e.Type {
		case Dir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case Symlink:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = e.Target
			hdr.Mode = 0o777
		case File:
			hdr.Typeflag = tar.TypeReg
			content = e.Data
			if e.Source != "" {
				b, err := os.ReadFile(e.Source)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", p, err)
				}
				content = b
			}
			hdr.Size = int64(len(content))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if _, err := tw.Write(content); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarMode converts permission and special bits to tar's c_mode bits.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// String describes the entry as `ls -l` would, briefly.
func (e Entry) String() string {
	switch e.Type {
	case Symlink:
		return e.Path + " -> " + e.Target
	case Dir:
		return fmt.Sprintf("%s/ (%v)", e.Path, e.Mode|fs.ModeDir)
	}
	return fmt.Sprintf("%s (%v)", e.Path, e.Mode)
}
