package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, content := range []string{"first", "second, longer than the first", ""} {
		if err := WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatalf("WriteFile(%q): %v", content, err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(content, string(got)); diff != "" {
			t.Fatalf("content (-want +got):\n%s", diff)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{"state.json"}, names); diff != "" {
		t.Fatalf("directory holds (-want +got):\n%s", diff)
	}
}

func TestWriteFileFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory in the way of the rename makes it fail after the
	// temporary file was written.
	blocked := filepath.Join(dir, "blocked")
	if err := os.MkdirAll(filepath.Join(blocked, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(blocked, []byte("new"), 0o600); err == nil {
		t.Fatal("WriteFile over a non-empty directory succeeded")
	}
	if tmps, _ := TempFilesOf(blocked); len(tmps) != 0 {
		t.Fatalf("failed write left %v", tmps)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
	if err := WriteFile(dir+"/", []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile to a directory path succeeded")
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "old" {
		t.Fatalf("old file = %q, %v", got, err)
	}
}

func TestIsTempAndTempFilesOf(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ipam.json")
	leftover := filepath.Join(dir, ".ipam.json"+TempPrefix+"123")
	other := filepath.Join(dir, ".other.json"+TempPrefix+"9")
	for _, f := range []string{leftover, other, p} {
		if err := os.WriteFile(f, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := TempFilesOf(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{leftover}, got); diff != "" {
		t.Fatalf("TempFilesOf (-want +got):\n%s", diff)
	}
	for name, want := range map[string]bool{
		filepath.Base(leftover): true,
		filepath.Base(other):    true,
		"ipam.json":             false,
		".hidden":               false,
		"x.tmp-1":               false,
	} {
		if IsTemp(name) != want {
			t.Errorf("IsTemp(%q) = %v, want %v", name, !want, want)
		}
	}
}
