// Package mountinfo reads /proc/PID/mountinfo: the mounts of a mount
// namespace with their propagation (shared peer group, slave master).
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	ID, Parent int
	// Root is the path of the mount's root within its filesystem.
	Root string
	// Point is the mount point, relative to the reader's root.
	Point   string
	Options string
	FSType  string
	Source  string
	// Shared is the peer group (0: not shared); Master the peer group this
	// mount is a slave of (0: not a slave).
	Shared, Master int
}

// Read returns the mounts of the calling thread's mount namespace (a thread
// may have unshared its own), in mount order.
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	return Parse(f)
}

// Parse parses mountinfo text.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("malformed mountinfo line %q", line)
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("malformed mountinfo line %q", line)
		}
		m := Mount{ID: id, Parent: parent, Root: unescape(f[3]), Point: unescape(f[4]), Options: f[5],
			FSType: f[sep+1], Source: unescape(f[sep+2])}
		for _, opt := range f[6:sep] {
			k, v, _ := strings.Cut(opt, ":")
			n, _ := strconv.Atoi(v)
			switch k {
			case "shared":
				m.Shared = n
			case "master":
				m.Master = n
			}
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Under reports whether path is dir or lies below it.
func Under(path, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// Containing returns the mount that holds path (the last mount whose mount
// point is path or its deepest ancestor), or false when none does.
func Containing(mounts []Mount, path string) (Mount, bool) {
	path = filepath.Clean(path)
	best, found := Mount{}, false
	for _, m := range mounts {
		if Under(path, m.Point) && (!found || len(m.Point) >= len(best.Point)) {
			best, found = m, true
		}
	}
	return best, found
}

// At returns the topmost mount whose mount point is exactly path.
func At(mounts []Mount, path string) (Mount, bool) {
	path = filepath.Clean(path)
	var best Mount
	found := false
	for _, m := range mounts {
		if m.Point == path {
			best, found = m, true
		}
	}
	return best, found
}
