package image

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// LoaderSearchPath is where the x86_64 glibc loader of Debian looks for a
// library that no DT_RUNPATH/DT_RPATH names and no /etc/ld.so.cache lists
// (`ld.so --help` prints it). The image has no ld.so.cache, so a library
// must be found here, as the image's loader will look for it.
var LoaderSearchPath = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"}

// Debian collects files of installed Debian packages from a root file
// system, with everything they need to run: the symlinks on the way to each
// file (Debian's merged /usr, /etc/alternatives), the ELF interpreter, and
// every shared library in the closure of DT_NEEDED.
type Debian struct {
	// Root is the root file system ("/" on a build host; a fixture in tests).
	Root string
	// PackageFiles lists the paths a package installed, as `dpkg-query -L`
	// does; nil means DpkgQueryList.
	PackageFiles func(ctx context.Context, pkg string) ([]string, error)
}

// Selection says what to take from the host.
type Selection struct {
	// Packages whose files are taken, those under one of Dirs.
	Packages []string
	Dirs     []string
	// Exclude lists paths of those packages to leave out (for example a
	// shell script: the image has no shell).
	Exclude []string
	// Paths must be in the image; they are followed through their symlinks
	// (e.g. /usr/sbin/iptables -> /etc/alternatives/iptables ->
	// /usr/sbin/iptables-nft -> xtables-nft-multi), each link taken along.
	Paths []string
}

// DpkgQueryList runs `dpkg-query -L pkg`.
func DpkgQueryList(ctx context.Context, pkg string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-L", pkg).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("dpkg-query -L %s: %s: install the package (scripts/deps.sh)", pkg, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("dpkg-query -L %s: %w", pkg, err)
	}
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "/") {
			paths = append(paths, l)
		}
	}
	return paths, sc.Err()
}

// Collect returns the entries of sel, sorted by path. It fails, naming the
// file and the fix, when a path is missing, a symlink dangles or loops, an
// executable is not an ELF file (the image has no shell for a script), or a
// shared library cannot be found where the image's loader will look.
func (d *Debian) Collect(ctx context.Context, sel Selection) ([]Entry, error) {
	list := d.PackageFiles
	if list == nil {
		list = DpkgQueryList
	}
	c := &collector{root: d.Root, entries: map[string]Entry{}, exclude: map[string]bool{}}
	for _, p := range sel.Exclude {
		c.exclude[p] = true
	}
	var want []string
	for _, pkg := range sel.Packages {
		files, err := list(ctx, pkg)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if c.exclude[f] || !under(f, sel.Dirs) {
				continue
			}
			fi, err := os.Lstat(c.host(f))
			if err != nil {
				return nil, fmt.Errorf("package %s lists %s: %w (reinstall it: apt-get install --reinstall %s)", pkg, f, err, pkg)
			}
			if fi.IsDir() {
				continue // directories come with the files in them
			}
			want = append(want, f)
		}
	}
	want = append(want, sel.Paths...)
	for _, p := range want {
		if err := c.add(p); err != nil {
			return nil, err
		}
	}
	// The ELF closure: interpreters and DT_NEEDED libraries of every ELF
	// file taken, and of theirs in turn.
	for len(c.elfQueue) > 0 {
		p := c.elfQueue[0]
		c.elfQueue = c.elfQueue[1:]
		if err := c.addELFDeps(p); err != nil {
			return nil, err
		}
	}
	out := make([]Entry, 0, len(c.entries))
	for _, p := range slices.Sorted(maps.Keys(c.entries)) {
		out = append(out, c.entries[p])
	}
	return out, nil
}

func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

type collector struct {
	root     string
	entries  map[string]Entry
	exclude  map[string]bool
	elfQueue []string
}

func (c *collector) host(p string) string { return filepath.Join(c.root, filepath.FromSlash(p)) }

// add takes image path p into the image: each symlink met on the way
// (in any component) and what the path finally resolves to.
func (c *collector) add(p string) error {
	_, err := c.resolve(p, 0)
	return err
}

// resolve walks p component by component like the kernel does, adding each
// symlink it crosses and the final file, and returns the resolved path.
func (c *collector) resolve(p string, depth int) (string, error) {
	if depth > 40 {
		return "", fmt.Errorf("%s: too many levels of symlinks", p)
	}
	if !path.IsAbs(p) {
		return "", fmt.Errorf("%s: not an absolute path", p)
	}
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := path.Join(cur, part)
		if c.exclude[next] {
			return "", fmt.Errorf("%s is excluded but needed here: leave out what links to it too, or stop excluding it", next)
		}
		fi, err := os.Lstat(c.host(next))
		if err != nil {
			return "", fmt.Errorf("%s: %w", next, err)
		}
		last := i == len(parts)-1
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(c.host(next))
			if err != nil {
				return "", err
			}
			c.entries[next] = Entry{Path: next, Type: Symlink, Target: target, Mode: 0o777}
			dest := target
			if !path.IsAbs(dest) {
				dest = path.Join(cur, dest)
			}
			rest := path.Join(append([]string{dest}, parts[i+1:]...)...)
			r, err := c.resolve(rest, depth+1)
			if err != nil {
				return "", fmt.Errorf("%s -> %s: %w", next, target, err)
			}
			return r, nil
		case fi.IsDir():
			if last {
				return "", fmt.Errorf("%s is a directory: list the files in it", next)
			}
		case fi.Mode().IsRegular():
			if !last {
				return "", fmt.Errorf("%s: %s is not a directory", p, next)
			}
			return next, c.addFile(next, fi)
		default:
			return "", fmt.Errorf("%s: not a regular file, directory or symlink (%v)", next, fi.Mode().Type())
		}
		cur = next
	}
	return cur, nil
}

func (c *collector) addFile(p string, fi fs.FileInfo) error {
	if _, ok := c.entries[p]; ok {
		return nil
	}
	mode := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	c.entries[p] = Entry{Path: p, Type: File, Mode: mode, Source: c.host(p)}
	isELF, err := hasELFMagic(c.host(p))
	if err != nil {
		return err
	}
	if isELF {
		c.elfQueue = append(c.elfQueue, p)
	} else if mode&0o111 != 0 {
		return fmt.Errorf("%s is executable but not an ELF file (a script?): the image has no shell or interpreter, exclude it", p)
	}
	return nil
}

func hasELFMagic(file string) (bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	magic := make([]byte, 4)
	n, _ := f.Read(magic)
	return n == 4 && string(magic) == elf.ELFMAG, nil
}

// addELFDeps adds the interpreter and the DT_NEEDED libraries of the ELF
// file at image path p, each found as the glibc loader finds it.
func (c *collector) addELFDeps(p string) error {
	f, err := elf.Open(c.host(p))
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s: %v %v ELF file, want x86_64 (ELFCLASS64): the image is linux/amd64", p, f.Class, f.Machine)
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return fmt.Errorf("%s: read PT_INTERP: %w", p, err)
		}
		interp := string(bytes.TrimRight(b, "\x00"))
		if err := c.add(interp); err != nil {
			return fmt.Errorf("%s: interpreter: %w", p, err)
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: DT_NEEDED: %w", p, err)
	}
	if len(needed) == 0 {
		return nil
	}
	dirs, err := c.searchDirs(f, p)
	if err != nil {
		return err
	}
	for _, lib := range needed {
		if strings.Contains(lib, "/") {
			if err := c.add(path.Join(path.Dir(p), lib)); err != nil {
				return fmt.Errorf("%s needs %s: %w", p, lib, err)
			}
			continue
		}
		found := false
		for _, dir := range dirs {
			cand := path.Join(dir, lib)
			if ok, err := c.loadable(cand); err != nil {
				return err
			} else if ok {
				if err := c.add(cand); err != nil {
					return fmt.Errorf("%s needs %s: %w", p, lib, err)
				}
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%s needs %s, found in none of %s: install the Debian package that has it (apt-file search %s) and add it to scripts/deps.sh",
				p, lib, strings.Join(dirs, ", "), lib)
		}
	}
	return nil
}

// searchDirs is the loader's search path for the libraries of f: its
// DT_RUNPATH, or else its DT_RPATH, then LoaderSearchPath.
func (c *collector) searchDirs(f *elf.File, p string) ([]string, error) {
	var dirs []string
	runpath, err := f.DynString(elf.DT_RUNPATH)
	if err != nil {
		return nil, fmt.Errorf("%s: DT_RUNPATH: %w", p, err)
	}
	if len(runpath) == 0 {
		if runpath, err = f.DynString(elf.DT_RPATH); err != nil {
			return nil, fmt.Errorf("%s: DT_RPATH: %w", p, err)
		}
	}
	for _, rp := range runpath {
		for _, d := range strings.Split(rp, ":") {
			if d == "" {
				continue
			}
			d = strings.NewReplacer("${ORIGIN}", path.Dir(p), "$ORIGIN", path.Dir(p)).Replace(d)
			if strings.Contains(d, "$") || !path.IsAbs(d) {
				return nil, fmt.Errorf("%s: search path %q: only absolute directories and $ORIGIN are supported", p, d)
			}
			dirs = append(dirs, path.Clean(d))
		}
	}
	return append(dirs, LoaderSearchPath...), nil
}

// loadable says whether the loader would take image path p: it exists
// (through symlinks) and is a 64-bit x86_64 ELF file. The loader skips a
// library of another class or machine and goes on searching.
func (c *collector) loadable(p string) (bool, error) {
	resolved, err := c.realPath(p)
	if err != nil {
		return false, nil
	}
	f, err := elf.Open(c.host(resolved))
	if err != nil {
		return false, nil
	}
	defer f.Close()
	return f.Class == elf.ELFCLASS64 && f.Machine == elf.EM_X86_64, nil
}

// realPath resolves image path p inside the root without adding anything.
func (c *collector) realPath(p string) (string, error) {
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	cur := "/"
	for hops := 0; len(parts) > 0; {
		next := path.Join(cur, parts[0])
		parts = parts[1:]
		fi, err := os.Lstat(c.host(next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many levels of symlinks", p)
		}
		target, err := os.Readlink(c.host(next))
		if err != nil {
			return "", err
		}
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		parts = append(strings.Split(strings.TrimPrefix(path.Clean(target), "/"), "/"), parts...)
		cur = "/"
	}
	return cur, nil
}
