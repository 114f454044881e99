package nodeinit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/cni"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestConfList checks the configuration list is what libcni loads and what
// the glia-cni plugin parses.
func TestConfList(t *testing.T) {
	b, err := ConfList("/var/run/glia/glia.sock")
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatalf("libcni cannot load the conflist: %v\n%s", err, b)
	}
	if list.Name != "glia" || list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 {
		t.Fatalf("conflist name %q version %q with %d plugins, want glia 1.1.0 with 1", list.Name, list.CNIVersion, len(list.Plugins))
	}
	var conf cni.NetConf
	if err := json.Unmarshal(list.Plugins[0].Bytes, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Type != cni.PluginType || conf.SocketPath != "/var/run/glia/glia.sock" {
		t.Fatalf("plugin type %q socketPath %q, want %q /var/run/glia/glia.sock", conf.Type, conf.SocketPath, cni.PluginType)
	}
	if _, err := ConfList("run/glia.sock"); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("relative socket: err %v, want one saying it must be absolute", err)
	}
}

type installEnv struct {
	src, binDir, confDir string
	opts                 InstallOptions
}

func newInstallEnv(t *testing.T, content string) installEnv {
	t.Helper()
	root := t.TempDir()
	e := installEnv{
		src:     filepath.Join(root, "image", "glia-cni"),
		binDir:  filepath.Join(root, "host", "opt", "cni", "bin"),
		confDir: filepath.Join(root, "host", "etc", "cni", "net.d"),
	}
	if err := os.MkdirAll(filepath.Dir(e.src), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.src, []byte(content), 0o700); err != nil {
		t.Fatal(err)
	}
	e.opts = InstallOptions{BinSrc: e.src, BinDir: e.binDir, ConfDir: e.confDir, Socket: "/var/run/glia/glia.sock"}
	return e
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestInstallCNI(t *testing.T) {
	e := newInstallEnv(t, "plugin v1")
	res, err := InstallCNI(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.BinaryChanged || !res.ConfListChanged {
		t.Fatalf("first install changed binary=%v conflist=%v, want both", res.BinaryChanged, res.ConfListChanged)
	}
	bin := filepath.Join(e.binDir, "glia-cni")
	conf := filepath.Join(e.confDir, "05-glia.conflist")
	if res.Binary != bin || res.ConfList != conf {
		t.Fatalf("installed %s and %s, want %s and %s", res.Binary, res.ConfList, bin, conf)
	}
	if got := readFile(t, bin); got != "plugin v1" {
		t.Fatalf("binary content %q", got)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("binary mode %v, want 0755", fi.Mode().Perm())
	}
	want, _ := ConfList(e.opts.Socket)
	if got := readFile(t, conf); got != string(want) {
		t.Fatalf("conflist:\n%s\nwant:\n%s", got, want)
	}

	// Idempotent: nothing changes, the same files stay.
	res, err = InstallCNI(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.BinaryChanged || res.ConfListChanged {
		t.Fatalf("second install changed binary=%v conflist=%v, want neither", res.BinaryChanged, res.ConfListChanged)
	}
	fi2, _ := os.Stat(bin)
	if !os.SameFile(fi, fi2) {
		t.Fatal("second install replaced an identical binary")
	}

	// A new plugin replaces the old one by rename: a runtime that has the
	// old binary open (executing it) keeps reading the old content.
	old, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := os.WriteFile(e.src, []byte("plugin v2, longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A temporary file left by an interrupted install is cleaned up.
	leftover := filepath.Join(e.binDir, ".glia-cni.tmp-123")
	if err := os.WriteFile(leftover, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = InstallCNI(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.BinaryChanged || res.ConfListChanged {
		t.Fatalf("upgrade changed binary=%v conflist=%v, want binary only", res.BinaryChanged, res.ConfListChanged)
	}
	if got := readFile(t, bin); got != "plugin v2, longer" {
		t.Fatalf("binary after upgrade %q", got)
	}
	oldContent, err := io.ReadAll(old)
	if err != nil {
		t.Fatal(err)
	}
	if string(oldContent) != "plugin v1" {
		t.Fatalf("the old binary was rewritten in place: an open handle reads %q", oldContent)
	}
	if diff := cmp.Diff([]string{"glia-cni"}, dirNames(t, e.binDir)); diff != "" {
		t.Fatalf("bin dir (-want +got):\n%s", diff)
	}

	// A changed socket rewrites the conflist only.
	e.opts.Socket = "/run/glia/other.sock"
	res, err = InstallCNI(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.BinaryChanged || !res.ConfListChanged {
		t.Fatalf("socket change changed binary=%v conflist=%v, want conflist only", res.BinaryChanged, res.ConfListChanged)
	}
	if !strings.Contains(readFile(t, conf), `"socketPath": "/run/glia/other.sock"`) {
		t.Fatalf("conflist does not name the new socket:\n%s", readFile(t, conf))
	}
}

func TestInstallCNIShadowing(t *testing.T) {
	e := newInstallEnv(t, "plugin")
	if err := os.MkdirAll(e.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"00-other.conflist", "04-x.conf", "10-later.conflist", "01-notes.txt"} {
		if err := os.WriteFile(filepath.Join(e.confDir, n), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := InstallCNI(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(e.confDir, "00-other.conflist"), filepath.Join(e.confDir, "04-x.conf")}
	if diff := cmp.Diff(want, res.Shadowing); diff != "" {
		t.Fatalf("shadowing (-want +got):\n%s", diff)
	}
}

// TestInstallCNIBadInput: every refusal names the problem and changes nothing.
func TestInstallCNIBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(e *installEnv)
		want string
	}{
		{"relative bin dir", func(e *installEnv) { e.opts.BinDir = "opt/cni/bin" }, `--bin-dir "opt/cni/bin" must be an absolute path`},
		{"relative conf dir", func(e *installEnv) { e.opts.ConfDir = "net.d" }, `--conf-dir "net.d" must be an absolute path`},
		{"relative socket", func(e *installEnv) { e.opts.Socket = "glia.sock" }, `--socket "glia.sock" must be an absolute path`},
		{"no source", func(e *installEnv) { e.opts.BinSrc = "" }, "--bin-src is required"},
		{"missing source", func(e *installEnv) { e.opts.BinSrc = e.src + "-missing" }, "open plugin binary"},
		{"source is a directory", func(e *installEnv) { e.opts.BinSrc = filepath.Dir(e.src) }, "is not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newInstallEnv(t, "plugin")
			tc.edit(&e)
			_, err := InstallCNI(e.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
			for _, d := range []string{e.binDir, e.confDir} {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s exists after a refused install (stat: %v)", d, err)
				}
			}
		})
	}
}

func TestUninstallCNI(t *testing.T) {
	e := newInstallEnv(t, "plugin")
	if _, err := InstallCNI(e.opts); err != nil {
		t.Fatal(err)
	}
	// What is not glia's stays.
	for _, p := range []string{filepath.Join(e.binDir, "loopback"), filepath.Join(e.confDir, "10-other.conflist"),
		filepath.Join(e.confDir, ".05-glia.conflist.tmp-9")} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := UninstallCNI(e.binDir, e.confDir); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"loopback"}, dirNames(t, e.binDir)); diff != "" {
		t.Fatalf("bin dir after uninstall (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"10-other.conflist"}, dirNames(t, e.confDir)); diff != "" {
		t.Fatalf("conf dir after uninstall (-want +got):\n%s", diff)
	}
	// Idempotent.
	if err := UninstallCNI(e.binDir, e.confDir); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
	if err := UninstallCNI("opt/cni/bin", e.confDir); err == nil || !strings.Contains(err.Error(), "must be an absolute path") {
		t.Fatalf("relative bin dir: err %v", err)
	}
}

func TestRun(t *testing.T) {
	e := newInstallEnv(t, "plugin")
	var stderr bytes.Buffer
	err := Run([]string{"install-cni", "--bin-src", e.src, "--bin-dir", e.binDir, "--conf-dir", e.confDir,
		"--socket", "/var/run/glia/glia.sock"}, &stderr, discard())
	if err != nil {
		t.Fatalf("install-cni: %v\n%s", err, stderr.String())
	}
	if got := readFile(t, filepath.Join(e.binDir, "glia-cni")); got != "plugin" {
		t.Fatalf("installed binary %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.confDir, "05-glia.conflist")); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "needs a subcommand"},
		{[]string{"mount-everything"}, `unknown subcommand "mount-everything" of glia-agent init: use one of mount-bpffs, mount-cgroup2, install-cni`},
		{[]string{"mount-bpffs"}, "--path is required"},
		{[]string{"mount-cgroup2", "--path", "/x", "extra"}, "takes no arguments"},
		{[]string{"mount-bpffs", "--paht", "/x"}, "unknown flag: --paht"},
		{[]string{"install-cni", "--bin-dir", "/x"}, "--conf-dir is required"},
	} {
		stderr.Reset()
		err := Run(tc.args, &stderr, discard())
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%q): err %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}
}
