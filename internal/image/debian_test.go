package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fixtureRoot makes a root file system from a list of files ("path" ->
// content; a content starting "-> " makes a symlink; a path ending in "/"
// a directory; a content starting "x " makes an executable).
func fixtureRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		host := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(p, "/"):
			if err := os.MkdirAll(host, 0o755); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(c, "-> "):
			if err := os.Symlink(strings.TrimPrefix(c, "-> "), host); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(c, "x "):
			if err := os.WriteFile(host, []byte(c), 0o755); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(host, []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

// debianFixture is a merged-/usr Debian root with an alternatives link.
var debianFixture = map[string]string{
	"/lib":                               "-> usr/lib",
	"/usr/lib/x86_64-linux-gnu/":         "",
	"/usr/share/pkg/data":                "data",
	"/usr/share/pkg/data-link":           "-> data",
	"/usr/share/pkg/doc/README":          "readme",
	"/usr/share/pkg/tool-real":           "tool",
	"/usr/share/pkg/tool":                "-> /etc/alternatives/tool",
	"/etc/alternatives/tool":             "-> /usr/share/pkg/tool-real",
	"/usr/share/pkg/via-lib":             "-> /lib/x86_64-linux-gnu/lib-data",
	"/usr/lib/x86_64-linux-gnu/lib-data": "lib data",
	"/usr/share/pkg/dangling":            "-> /nonexistent",
	"/usr/share/pkg/loop":                "-> loop",
	"/usr/share/pkg/script":              "x #!/bin/sh\n",
	"/usr/share/pkg/script-link":         "-> script",
}

func entryList(entries []Entry) []string {
	var out []string
	for _, e := range entries {
		s := e.String()
		if e.Type == File {
			if !strings.HasPrefix(e.Source, "/") {
				s += " (source not absolute: " + e.Source + ")"
			}
		}
		out = append(out, s)
	}
	return out
}

func TestCollectFixture(t *testing.T) {
	root := fixtureRoot(t, debianFixture)
	pkgFiles := map[string][]string{
		"pkg": {"/.", "/usr", "/usr/share", "/usr/share/pkg", "/usr/share/pkg/data", "/usr/share/pkg/data-link", "/usr/share/pkg/doc/README"},
		"bad": {"/usr/share/pkg/missing"},
	}
	deb := &Debian{Root: root, PackageFiles: func(_ context.Context, pkg string) ([]string, error) {
		f, ok := pkgFiles[pkg]
		if !ok {
			return nil, errors.New("package " + pkg + " is not installed")
		}
		return f, nil
	}}
	tests := []struct {
		name    string
		sel     Selection
		want    []string
		wantErr string
	}{
		{
			name: "package files under the selected directories, minus exclusions",
			sel:  Selection{Packages: []string{"pkg"}, Dirs: []string{"/usr/share/pkg"}, Exclude: []string{"/usr/share/pkg/doc/README"}},
			want: []string{"/usr/share/pkg/data (-rw-r--r--)", "/usr/share/pkg/data-link -> data"},
		},
		{
			name: "directories outside the selection are left out",
			sel:  Selection{Packages: []string{"pkg"}, Dirs: []string{"/usr/share/pkg/doc"}},
			want: []string{"/usr/share/pkg/doc/README (-rw-r--r--)"},
		},
		{
			name: "an alternatives chain is taken link by link",
			sel:  Selection{Paths: []string{"/usr/share/pkg/tool"}},
			want: []string{"/etc/alternatives/tool -> /usr/share/pkg/tool-real", "/usr/share/pkg/tool -> /etc/alternatives/tool", "/usr/share/pkg/tool-real (-rw-r--r--)"},
		},
		{
			name: "a symlinked directory on the way is taken and the file lands where it resolves",
			sel:  Selection{Paths: []string{"/usr/share/pkg/via-lib"}},
			want: []string{"/lib -> usr/lib", "/usr/lib/x86_64-linux-gnu/lib-data (-rw-r--r--)", "/usr/share/pkg/via-lib -> /lib/x86_64-linux-gnu/lib-data"},
		},
		{name: "a dangling symlink", sel: Selection{Paths: []string{"/usr/share/pkg/dangling"}}, wantErr: "/usr/share/pkg/dangling -> /nonexistent: /nonexistent: lstat"},
		{name: "a symlink loop", sel: Selection{Paths: []string{"/usr/share/pkg/loop"}}, wantErr: "too many levels of symlinks"},
		{name: "a missing path", sel: Selection{Paths: []string{"/usr/sbin/nothing"}}, wantErr: "/usr/sbin: lstat"},
		{name: "a directory", sel: Selection{Paths: []string{"/usr/share/pkg"}}, wantErr: "/usr/share/pkg is a directory"},
		{name: "a relative path", sel: Selection{Paths: []string{"usr/share/pkg/data"}}, wantErr: "not an absolute path"},
		{name: "a script", sel: Selection{Paths: []string{"/usr/share/pkg/script"}}, wantErr: "/usr/share/pkg/script is executable but not an ELF file (a script?)"},
		{
			name:    "a link to an excluded file",
			sel:     Selection{Paths: []string{"/usr/share/pkg/script-link"}, Exclude: []string{"/usr/share/pkg/script"}},
			wantErr: "/usr/share/pkg/script-link -> script: /usr/share/pkg/script is excluded but needed here",
		},
		{name: "a package that is not installed", sel: Selection{Packages: []string{"nope"}, Dirs: []string{"/"}}, wantErr: "package nope is not installed"},
		{name: "a package file that is gone", sel: Selection{Packages: []string{"bad"}, Dirs: []string{"/usr"}}, wantErr: "package bad lists /usr/share/pkg/missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := deb.Collect(context.Background(), tt.sel)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Collect: error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Collect: %v", err)
			}
			if diff := cmp.Diff(tt.want, entryList(got)); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			for _, e := range got {
				if e.Type == File && !strings.HasPrefix(e.Source, root) {
					t.Errorf("%s: source %s lies outside the root %s", e.Path, e.Source, root)
				}
			}
		})
	}
}

// copyHostFile copies a host file into a fixture root at the same path.
func copyHostFile(t *testing.T, root, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (the iptables and nftables packages are build dependencies: scripts/deps.sh)", err)
	}
	dst := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestCollectMissingLibrary: an ELF program whose library is nowhere the
// loader looks is refused, naming the library and the fix.
func TestCollectMissingLibrary(t *testing.T) {
	requireHostPackages(t)
	root := t.TempDir()
	interp, err := filepath.EvalSymlinks("/lib64/ld-linux-x86-64.so.2")
	if err != nil {
		t.Fatal(err)
	}
	copyHostFile(t, root, interp)
	// /lib64 -> the loader's directory, so /lib64/ld-linux-x86-64.so.2 resolves.
	if err := os.Symlink(filepath.Dir(interp), filepath.Join(root, "lib64")); err != nil {
		t.Fatal(err)
	}
	copyHostFile(t, root, "/usr/sbin/nft")
	_, err = (&Debian{Root: root}).Collect(context.Background(), Selection{Paths: []string{"/usr/sbin/nft"}})
	want := "/usr/sbin/nft needs libnftables.so.1, found in none of /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib, /usr/lib: install the Debian package that has it"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Collect: error %v, want one containing %q", err, want)
	}
}

// TestCollectHostUserspace takes the image's userspace from this host and
// checks what the loader and iptables need is there: the interpreter with
// the links to it, the libraries (each through its soname link) and the
// xtables modules glia's masquerade rule loads.
func TestCollectHostUserspace(t *testing.T) {
	requireHostPackages(t)
	entries, err := (&Debian{Root: "/"}).Collect(context.Background(), Userspace)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	fsys := map[string]Entry{}
	for _, e := range entries {
		fsys[e.Path] = e
	}
	for _, p := range append(slicesClone(Userspace.Paths),
		"/lib64/ld-linux-x86-64.so.2",
		"/lib/x86_64-linux-gnu/libc.so.6",
		"/lib/x86_64-linux-gnu/libxtables.so.12",
		"/lib/x86_64-linux-gnu/libnftables.so.1",
		"/lib/x86_64-linux-gnu/libnftnl.so.11",
		"/lib/x86_64-linux-gnu/libmnl.so.0",
		"/usr/lib/x86_64-linux-gnu/xtables/libxt_MASQUERADE.so",
		"/usr/lib/x86_64-linux-gnu/xtables/libxt_comment.so",
		"/usr/sbin/xtables-legacy-multi",
	) {
		hostReal, err := filepath.EvalSymlinks(p)
		if err != nil {
			t.Fatalf("host: %v", err)
		}
		got := resolveEntries(fsys, p)
		if got != hostReal {
			t.Errorf("%s resolves to %q in the image, to %s on the host", p, got, hostReal)
			continue
		}
		if fsys[got].Type != File {
			t.Errorf("%s resolves to %s, a %v", p, got, fsys[got].Type)
		}
	}
	for _, ex := range Userspace.Exclude {
		if _, ok := fsys[ex]; ok {
			t.Errorf("%s is excluded but taken", ex)
		}
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Path, "/usr/share/") {
			t.Errorf("%s taken: docs and data outside the selected directories are not", e.Path)
		}
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// resolveEntries follows p's symlinks inside entries ("" if it dangles).
func resolveEntries(fsys map[string]Entry, p string) string {
	cur := "/"
	parts := splitPath(p)
	for hops := 0; len(parts) > 0; {
		next := filepath.Join(cur, parts[0])
		parts = parts[1:]
		e, ok := fsys[next]
		if !ok {
			// A directory made implicitly (a parent of an entry).
			if hasChild(fsys, next) {
				cur = next
				continue
			}
			return ""
		}
		if e.Type != Symlink {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return ""
		}
		target := e.Target
		if !filepath.IsAbs(target) {
			target = filepath.Join(cur, target)
		}
		parts = append(splitPath(target), parts...)
		cur = "/"
	}
	return cur
}

func hasChild(fsys map[string]Entry, dir string) bool {
	for p := range fsys {
		if strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	return false
}
