package noderunner

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// volumeFile is one file of a configMap, secret, downwardAPI or projected
// volume.
type volumeFile struct {
	Data []byte
	Mode fs.FileMode
}

// dataDirLink is the symlink that names the current timestamped data
// directory, as kubelet's atomic writer lays volumes out:
//
//	dir/..2024_05_01_10_00_00.123456789/key   the files
//	dir/..data -> ..2024_05_01_10_00_00.123456789
//	dir/key -> ..data/key                      one per top-level name
//
// An update writes a new timestamped directory and swaps ..data with a
// rename, so a reader sees the old files or the new ones, never a mix.
const (
	dataDirLink    = "..data"
	newDataDirLink = "..data_tmp"
)

// validatePayloadPath checks a volume item's path as the API does: relative,
// no "..", not starting with "..".
func validatePayloadPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case filepath.IsAbs(p):
		return fmt.Errorf("path %q is absolute", p)
	case strings.HasPrefix(p, ".."):
		return fmt.Errorf("path %q starts with '..'", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("path %q contains '..'", p)
		}
	}
	return nil
}

// writeAtomic makes dir hold exactly payload, atomically; it reports
// whether anything changed. now names the new data directory.
func writeAtomic(dir string, payload map[string]volumeFile, now time.Time) (bool, error) {
	for p := range payload {
		if err := validatePayloadPath(p); err != nil {
			return false, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create volume dir: %w", err)
	}
	old, err := os.Readlink(filepath.Join(dir, dataDirLink))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", dataDirLink, err)
	}
	if old != "" && sameContent(filepath.Join(dir, old), payload) && userLinksMatch(dir, payload) {
		return false, nil
	}
	tsDir, err := os.MkdirTemp(dir, now.UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return false, err
	}
	for p, f := range payload {
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.WriteFile(full, f.Data, f.Mode.Perm()); err != nil {
			return false, fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.Chmod(full, f.Mode.Perm()); err != nil { // the umask must not change the mode
			return false, err
		}
	}
	tmpLink := filepath.Join(dir, newDataDirLink)
	os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return false, fmt.Errorf("link new data dir: %w", err)
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataDirLink)); err != nil {
		return false, fmt.Errorf("swap %s: %w", dataDirLink, err)
	}
	// The user-visible names: one symlink per top-level name, through
	// ..data so they follow every swap.
	want := topLevel(payload)
	for name := range want {
		link := filepath.Join(dir, name)
		target := filepath.Join(dataDirLink, name)
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			return false, fmt.Errorf("link %s: %w", name, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".."):
			if name != dataDirLink && name != filepath.Base(tsDir) {
				os.RemoveAll(filepath.Join(dir, name)) // the old data dir and leftovers
			}
		case !want[name]:
			os.RemoveAll(filepath.Join(dir, name))
		}
	}
	return true, nil
}

func topLevel(payload map[string]volumeFile) map[string]bool {
	out := map[string]bool{}
	for p := range payload {
		top, _, _ := strings.Cut(p, "/")
		out[top] = true
	}
	return out
}

// sameContent reports whether dataDir holds exactly payload.
func sameContent(dataDir string, payload map[string]volumeFile) bool {
	var have []string
	err := filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dataDir, p)
			have = append(have, rel)
		}
		return nil
	})
	if err != nil || len(have) != len(payload) {
		return false
	}
	sort.Strings(have)
	for _, rel := range have {
		f, ok := payload[rel]
		if !ok {
			return false
		}
		full := filepath.Join(dataDir, rel)
		st, err := os.Lstat(full)
		if err != nil || st.Mode().Perm() != f.Mode.Perm() {
			return false
		}
		b, err := os.ReadFile(full)
		if err != nil || !bytes.Equal(b, f.Data) {
			return false
		}
	}
	return true
}

func userLinksMatch(dir string, payload map[string]volumeFile) bool {
	for name := range topLevel(payload) {
		if cur, err := os.Readlink(filepath.Join(dir, name)); err != nil || cur != filepath.Join(dataDirLink, name) {
			return false
		}
	}
	return true
}
