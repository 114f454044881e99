// Package nodeinit prepares a node for glia: the DaemonSet's init containers
// run it as `glia-agent init ...` before the agent starts. It mounts bpffs and
// cgroup2 where they are not mounted yet, and installs the glia-cni plugin and
// its network configuration list (05-glia.conflist) atomically, so a container
// runtime never reads a half-written file or executes a truncated binary.
// UninstallCNI undoes the install; the agent calls it when glia is being
// uninstalled.
//
// Every operation is idempotent: run twice, the second run changes nothing.
package nodeinit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/atomicfile"
	"glia.dev/glia/internal/cni"
)

// Names of what InstallCNI writes.
const (
	// ConfListName is the network configuration list InstallCNI writes in
	// the conf dir. "05-" sorts it before the usual "10-" of other plugins.
	ConfListName = "05-glia.conflist"
	// NetworkName is the network's name in the configuration list.
	NetworkName = "glia"
	// PluginBinary is the plugin's file name in the bin dir; it is also the
	// plugin "type" of the configuration (the runtime looks the type up in
	// the bin dir).
	PluginBinary = cni.PluginType
	// CNIVersion is the spec version of the configuration list.
	CNIVersion = "1.1.0"
)

// Filesystem magic numbers, as statfs(2) reports them.
const (
	bpffsMagic   = unix.BPF_FS_MAGIC
	cgroup2Magic = unix.CGROUP2_SUPER_MAGIC
)

// MountBPFFS mounts a BPF filesystem at path unless path already is on one.
// It creates path when missing. mounted says whether it mounted.
func MountBPFFS(path string) (mounted bool, err error) {
	return mountUnless(path, "bpffs", "bpf", bpffsMagic)
}

// MountCgroup2 mounts the cgroup v2 hierarchy at path unless path already
// is on one. It creates path when missing. mounted says whether it mounted.
func MountCgroup2(path string) (mounted bool, err error) {
	return mountUnless(path, "cgroup2", "cgroup2", cgroup2Magic)
}

func mountUnless(path, source, fstype string, magic int64) (bool, error) {
	if !filepath.IsAbs(path) {
		return false, fmt.Errorf("mount %s: path %q must be absolute", fstype, path)
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return false, fmt.Errorf("mount %s: create mount point: %w", fstype, err)
	}
	is, got, err := isFS(path, magic)
	if err != nil {
		return false, fmt.Errorf("mount %s: %w", fstype, err)
	}
	if is {
		return false, nil
	}
	if err := unix.Mount(source, path, fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		hint := ""
		if errors.Is(err, unix.EPERM) {
			hint = " (mounting needs CAP_SYS_ADMIN: run the init container privileged)"
		}
		return false, fmt.Errorf("mount %s at %s (it is on a file system with magic %#x): %w%s", fstype, path, got, err, hint)
	}
	is, got, err = isFS(path, magic)
	if err != nil {
		return true, fmt.Errorf("mount %s: check after mounting: %w", fstype, err)
	}
	if !is {
		return true, fmt.Errorf("mount %s at %s: after mounting, the path is on magic %#x, not %#x", fstype, path, got, magic)
	}
	return true, nil
}

// isFS reports whether path is on a file system with the given magic, and
// the magic it is on.
func isFS(path string, magic int64) (bool, int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Type) == magic, int64(st.Type), nil
}

// InstallOptions say what InstallCNI installs where.
type InstallOptions struct {
	// BinSrc is the glia-cni binary to install.
	BinSrc string
	// BinDir is the runtime's CNI plugin directory (/opt/cni/bin on the host).
	BinDir string
	// ConfDir is the runtime's CNI configuration directory (/etc/cni/net.d).
	ConfDir string
	// Socket is the agent's API socket, the plugin's socketPath.
	Socket string
}

// Validate checks the options and says what to change.
func (o InstallOptions) Validate() error {
	var errs []error
	for _, f := range []struct{ flag, path string }{
		{"--bin-src", o.BinSrc}, {"--bin-dir", o.BinDir}, {"--conf-dir", o.ConfDir}, {"--socket", o.Socket},
	} {
		if f.path == "" {
			errs = append(errs, fmt.Errorf("%s is required", f.flag))
		} else if !filepath.IsAbs(f.path) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", f.flag, f.path))
		}
	}
	return errors.Join(errs...)
}

// InstallResult says what InstallCNI changed.
type InstallResult struct {
	Binary   string // the installed plugin's path
	ConfList string // the configuration list's path
	// BinaryChanged and ConfListChanged are false when the file already had
	// the content to install.
	BinaryChanged   bool
	ConfListChanged bool
	// Shadowing lists the network configuration files in the conf dir
	// that sort before ConfListName: a runtime that uses the first
	// configuration it finds (containerd, CRI-O) uses them instead of glia's.
	Shadowing []string
}

// ConfList returns the network configuration list for the agent's socket:
// the one network "glia" with the one plugin glia-cni.
func ConfList(socket string) ([]byte, error) {
	if !filepath.IsAbs(socket) {
		return nil, fmt.Errorf("socket %q must be an absolute path", socket)
	}
	type plugin struct {
		Type       string `json:"type"`
		SocketPath string `json:"socketPath"`
	}
	conf := struct {
		CNIVersion string   `json:"cniVersion"`
		Name       string   `json:"name"`
		Plugins    []plugin `json:"plugins"`
	}{CNIVersion, NetworkName, []plugin{{Type: cni.PluginType, SocketPath: socket}}}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// InstallCNI copies the plugin binary into BinDir (as PluginBinary, mode
// 0755) and then writes ConfListName into ConfDir, each atomically: a
// temporary file in the target's directory, fsynced, renamed over the
// target, the directory fsynced. A binary a runtime is executing is
// replaced by the rename, never rewritten in place. Files that already have
// the content to install are left alone; leftover temporary files of an
// interrupted install are removed.
func InstallCNI(o InstallOptions) (InstallResult, error) {
	if err := o.Validate(); err != nil {
		return InstallResult{}, fmt.Errorf("install CNI: %w", err)
	}
	res := InstallResult{
		Binary:   filepath.Join(o.BinDir, PluginBinary),
		ConfList: filepath.Join(o.ConfDir, ConfListName),
	}
	conf, err := ConfList(o.Socket)
	if err != nil {
		return res, fmt.Errorf("install CNI: %w", err)
	}
	src, err := os.Open(o.BinSrc)
	if err != nil {
		return res, fmt.Errorf("install CNI: open plugin binary: %w", err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return res, fmt.Errorf("install CNI: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return res, fmt.Errorf("install CNI: plugin binary %s is not a regular file (%v)", o.BinSrc, fi.Mode().Type())
	}
	for _, d := range []string{o.BinDir, o.ConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return res, fmt.Errorf("install CNI: %w", err)
		}
	}
	if err := removeTemps(res.Binary); err != nil {
		return res, fmt.Errorf("install CNI: %w", err)
	}
	if err := removeTemps(res.ConfList); err != nil {
		return res, fmt.Errorf("install CNI: %w", err)
	}

	// The binary first: a configuration must never name a plugin that is
	// not there yet.
	if res.BinaryChanged, err = installBinary(src, fi, res.Binary); err != nil {
		return res, fmt.Errorf("install CNI: %w", err)
	}
	old, err := os.ReadFile(res.ConfList)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("install CNI: read %s: %w", res.ConfList, err)
	}
	if err != nil || !bytes.Equal(old, conf) {
		if err := atomicfile.WriteFile(res.ConfList, conf, 0o644); err != nil {
			return res, fmt.Errorf("install CNI: %w", err)
		}
		res.ConfListChanged = true
	}
	if res.Shadowing, err = shadowing(o.ConfDir); err != nil {
		return res, fmt.Errorf("install CNI: %w", err)
	}
	return res, nil
}

// installBinary replaces dst with src's content, mode 0755, unless dst is
// src or already has that content and mode.
func installBinary(src *os.File, srcInfo os.FileInfo, dst string) (changed bool, err error) {
	if di, err := os.Stat(dst); err == nil {
		if os.SameFile(srcInfo, di) {
			return false, nil
		}
		same, err := sameContent(src, dst, srcInfo.Size(), di)
		if err != nil {
			return false, err
		}
		if same && di.Mode().Perm() == 0o755 {
			return false, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("stat %s: %w", dst, err)
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("rewind %s: %w", src.Name(), err)
	}
	dir, base := filepath.Split(dst)
	tmp, err := os.CreateTemp(dir, "."+base+atomicfile.TempPrefix+"*")
	if err != nil {
		return false, fmt.Errorf("create temporary file for %s: %w", dst, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, src); err != nil {
		_ = tmp.Close()
		return false, fmt.Errorf("copy %s to %s: %w", src.Name(), tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		_ = tmp.Close()
		return false, fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return false, fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return false, fmt.Errorf("rename %s to %s: %w", tmp.Name(), dst, err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return false, err
	}
	return true, nil
}

func sameContent(src *os.File, dst string, size int64, di os.FileInfo) (bool, error) {
	if !di.Mode().IsRegular() || di.Size() != size {
		return false, nil
	}
	d, err := os.Open(dst)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", dst, err)
	}
	defer d.Close()
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("rewind %s: %w", src.Name(), err)
	}
	a := make([]byte, 64<<10)
	b := make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(src, a)
		nb, eb := io.ReadFull(d, b)
		if na != nb || !bytes.Equal(a[:na], b[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, fmt.Errorf("read %s: %w", src.Name(), ea)
		}
		if eb != nil {
			if eb == io.EOF || eb == io.ErrUnexpectedEOF {
				return false, nil
			}
			return false, fmt.Errorf("read %s: %w", dst, eb)
		}
	}
}

// shadowing lists the configuration files in dir a runtime would pick
// before ConfListName (libcni's extensions, sorted by name as libcni does).
func shadowing(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || atomicfile.IsTemp(n) || n >= ConfListName {
			continue
		}
		switch filepath.Ext(n) {
		case ".conf", ".conflist", ".json":
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

// UninstallCNI removes what InstallCNI installed: ConfListName from confDir
// first (so no new pod is set up with glia), then the plugin binary from
// binDir, and leftover temporary files of both. Files already gone are not
// an error; neither directory is removed.
func UninstallCNI(binDir, confDir string) error {
	var errs []error
	for _, f := range []struct{ flag, path string }{{"bin dir", binDir}, {"conf dir", confDir}} {
		if !filepath.IsAbs(f.path) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", f.flag, f.path))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("uninstall CNI: %w", errors.Join(errs...))
	}
	for _, p := range []string{filepath.Join(confDir, ConfListName), filepath.Join(binDir, PluginBinary)} {
		err := os.Remove(p)
		switch {
		case err == nil:
			if err := atomicfile.SyncDir(filepath.Dir(p)); err != nil {
				errs = append(errs, err)
			}
		case errors.Is(err, os.ErrNotExist):
		default:
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
		if err := removeTemps(p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("uninstall CNI: %w", errors.Join(errs...))
	}
	return nil
}

func removeTemps(path string) error {
	temps, err := atomicfile.TempFilesOf(path)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range temps {
		if err := os.Remove(t); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove leftover %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}
