// Package atomicfile replaces files so that a crash at any moment leaves
// either the old or the new content, never a mix: the agent's IPAM and
// endpoint state are written through it.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TempPrefix starts the name of every temporary file WriteFile creates next
// to its target ("." + base name + TempPrefix + random). A temporary file
// left by a crash between create and rename can be recognised with IsTemp
// and removed.
const TempPrefix = ".tmp-"

// WriteFile replaces path with data, with permissions mode: it writes a
// temporary file in the same directory, fsyncs it, renames it over path and
// fsyncs the directory. On error the temporary file is removed and path is
// left as it was.
func WriteFile(path string, data []byte, mode os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return fmt.Errorf("atomic write: %q names no file", path)
	}
	tmp, err := os.CreateTemp(dir, "."+base+TempPrefix+"*")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp.Name(), path, err)
	}
	if err := SyncDir(dir); err != nil {
		return err
	}
	return nil
}

// SyncDir fsyncs a directory, making renames and removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// IsTemp says whether name (a base name) is a temporary file of WriteFile.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, TempPrefix)
}

// TempFilesOf returns the leftover temporary files of WriteFile for path.
func TempFilesOf(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	m, err := filepath.Glob(filepath.Join(dir, "."+escapeGlob(base)+TempPrefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("list temporary files of %s: %w", path, err)
	}
	return m, nil
}

func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
