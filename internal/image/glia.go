package image

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"
)

// Binaries are glia's three programs, installed in /usr/bin of the image.
var Binaries = []string{"glia", "glia-agent", "glia-cni"}

// PATH is the image's PATH (as a Debian root user's).
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Userspace is the iptables/nftables userspace the legacy datapath needs:
// github.com/coreos/go-iptables runs `iptables` (found through PATH), and
// kube-proxy-style tooling and operators use the -save/-restore and IPv6
// variants and `nft`. Debian's packages are taken whole (both the nft and
// the legacy xtables multi-binaries, every xtables extension module), minus
// the shell scripts, plus the alternatives symlinks Debian's
// update-alternatives makes (they are in no package's file list).
var Userspace = Selection{
	Packages: []string{"iptables", "nftables"},
	Dirs:     []string{"/usr/sbin", "/usr/bin", "/usr/lib/x86_64-linux-gnu/xtables"},
	Exclude:  []string{"/usr/sbin/iptables-apply", "/usr/sbin/ip6tables-apply"},
	Paths: []string{
		"/usr/sbin/iptables", "/usr/sbin/iptables-save", "/usr/sbin/iptables-restore",
		"/usr/sbin/ip6tables", "/usr/sbin/ip6tables-save", "/usr/sbin/ip6tables-restore",
		"/usr/sbin/nft",
	},
}

// Options are the inputs of glia's image besides the host's packages, and
// where it is written.
type Options struct {
	// BinDir holds glia, glia-agent and glia-cni, built static
	// (CGO_ENABLED=0) for linux/amd64.
	BinDir string
	// Repository and Version make the image's tag (glia:0.1.0); Version is
	// also the label org.opencontainers.image.version.
	Repository string
	Version    string
	// Revision (a git commit) becomes org.opencontainers.image.revision
	// when set.
	Revision string
	// Created is the image's creation time (the last commit's time).
	Created time.Time
	// LayoutDir and Tarball are where Run writes the OCI image layout and
	// the docker-save tarball.
	LayoutDir string
	Tarball   string
	// Host is where the userspace comes from (nil: the Debian root "/").
	Host *Debian
}

// Flags registers the options' flags; Created comes from --source-date-epoch.
func (o *Options) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.BinDir, "bin-dir", "bin/image/bin", "directory with glia, glia-agent and glia-cni built static for linux/amd64")
	fs.StringVar(&o.Repository, "repository", "glia", "image repository (the tag is REPOSITORY:VERSION)")
	fs.StringVar(&o.Version, "version", "", "image version: its tag and label org.opencontainers.image.version")
	fs.StringVar(&o.Revision, "revision", "", "source revision (git rev-parse HEAD): label org.opencontainers.image.revision")
	fs.StringVar(&o.LayoutDir, "oci-layout", "bin/image/oci", "directory to write the OCI image layout to")
	fs.StringVar(&o.Tarball, "tarball", "bin/image/glia.tar", "file to write the image tarball (docker load / ctr images import) to")
	fs.Func("source-date-epoch", "image creation time, seconds since 1970 (default: $SOURCE_DATE_EPOCH, else 0)", func(s string) error {
		t, err := EpochFromEnv(s)
		o.Created = t
		return err
	})
}

// Validate checks the options Glia needs (Run also needs the outputs).
func (o Options) Validate() error {
	if _, err := o.Tag(); err != nil {
		return err
	}
	if o.Created.IsZero() {
		return errors.New("image creation time is not set: use the last commit's time (SOURCE_DATE_EPOCH) or the Unix epoch")
	}
	if o.BinDir == "" {
		return errors.New("no directory of glia binaries: set --bin-dir")
	}
	return nil
}

// Tag is the image's tag, REPOSITORY:VERSION.
func (o Options) Tag() (name.Tag, error) {
	if o.Version == "" {
		return name.Tag{}, errors.New("image version is empty: set --version (make image GLIA_VERSION=...)")
	}
	t, err := name.NewTag(o.Repository + ":" + o.Version)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image tag %q: %w (set --repository and --version to a valid repository and tag)", o.Repository+":"+o.Version, err)
	}
	return t, nil
}

// Glia builds glia's image: a layer with the iptables/nftables userspace
// and the directories every container expects (/tmp, /run: iptables takes
// /run/xtables.lock), and a layer with glia's binaries, so a new build of
// glia changes only the second.
func Glia(ctx context.Context, o Options) (v1.Image, []Layer, error) {
	if err := o.Validate(); err != nil {
		return nil, nil, err
	}
	host := o.Host
	if host == nil {
		host = &Debian{Root: "/"}
	}
	userspace, err := host.Collect(ctx, Userspace)
	if err != nil {
		return nil, nil, fmt.Errorf("iptables/nftables userspace: %w", err)
	}
	userspace = append(userspace,
		Entry{Path: "/tmp", Type: Dir, Mode: 0o777 | fs.ModeSticky},
		Entry{Path: "/run", Type: Dir, Mode: 0o755},
	)
	slices.SortFunc(userspace, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	var bins []Entry
	for _, b := range Binaries {
		src := filepath.Join(o.BinDir, b)
		if err := checkStatic(src); err != nil {
			return nil, nil, err
		}
		bins = append(bins, Entry{Path: "/usr/bin/" + b, Type: File, Mode: 0o755, Source: src})
	}
	layers := []Layer{
		{Name: "iptables and nftables userspace from Debian packages " + fmt.Sprint(Userspace.Packages), Entries: userspace},
		{Name: "glia binaries " + fmt.Sprint(Binaries), Entries: bins},
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "glia",
		"org.opencontainers.image.description": "glia agent, CLI and CNI plugin, with the iptables/nftables userspace",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
	}
	if o.Revision != "" {
		labels["org.opencontainers.image.revision"] = o.Revision
	}
	img, err := Build(layers, Config{
		Cmd:     []string{"/usr/bin/glia-agent"},
		Env:     []string{"PATH=" + PATH},
		Labels:  labels,
		Created: o.Created,
	})
	return img, layers, err
}

// checkStatic fails unless file is a static x86_64 ELF executable: the
// image's loader and libc are Debian's, not necessarily the build host's.
func checkStatic(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("%s: %w (build it first: make image builds it)", file, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s is built for %v %v: build it with GOOS=linux GOARCH=amd64", file, f.Class, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: build it with CGO_ENABLED=0", file)
		}
	}
	return nil
}

// EpochFromEnv parses SOURCE_DATE_EPOCH (seconds since the Unix epoch);
// empty means the epoch itself.
func EpochFromEnv(s string) (time.Time, error) {
	if s == "" {
		return Epoch, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970 (git log -1 --format=%%ct)", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// Result says what Run wrote.
type Result struct {
	Tag    name.Tag
	Digest v1.Hash
	// Size is what a registry stores: manifest, config, compressed layers.
	Size   int64
	Layers []Layer
}

// Run builds glia's image and writes it to o.LayoutDir and o.Tarball.
func Run(ctx context.Context, o Options) (Result, error) {
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	tag, err := o.Tag()
	if err != nil {
		return Result{}, err
	}
	if o.LayoutDir == "" || o.Tarball == "" {
		return Result{}, errors.New("set both the OCI layout directory (--oci-layout) and the tarball (--tarball)")
	}
	img, layers, err := Glia(ctx, o)
	if err != nil {
		return Result{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return Result{}, err
	}
	size, err := Size(img)
	if err != nil {
		return Result{}, err
	}
	if err := WriteLayout(o.LayoutDir, tag, img); err != nil {
		return Result{}, err
	}
	if err := WriteTarball(o.Tarball, tag, img); err != nil {
		return Result{}, err
	}
	return Result{Tag: tag, Digest: digest, Size: size, Layers: layers}, nil
}
