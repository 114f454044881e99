package netnsfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

func TestPrivilegedLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and mounts")
	}
	dir := filepath.Join(t.TempDir(), "netns")
	if err := ShareDir(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Remove(dir) }) // unmounts the directory's own bind
	if !IsMountPoint(dir) {
		t.Fatalf("%s is not a mount point after ShareDir", dir)
	}
	if err := ShareDir(dir); err != nil {
		t.Fatalf("ShareDir twice: %v", err)
	}
	path := filepath.Join(dir, "one")
	if err := Create(path); err != nil {
		t.Fatal(err)
	}
	if !IsNamespace(path) {
		t.Fatalf("%s is not a namespace after Create", path)
	}
	if err := Create(path); err == nil {
		t.Fatal("Create over an existing namespace succeeded")
	}
	n, err := ns.GetNS(path)
	if err != nil {
		t.Fatal(err)
	}
	err = n.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&1 == 0 {
			t.Error("lo is down in the new namespace")
		}
		links, err := netlink.LinkList()
		if len(links) != 1 {
			t.Errorf("the new namespace has %d links, want lo alone", len(links))
		}
		return err
	})
	n.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("%s still there after Remove: %v", path, err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("Remove of a missing namespace: %v", err)
	}
	if err := Create(filepath.Join(dir, "missing", "x")); err == nil {
		t.Fatal("Create in a missing directory succeeded")
	}
}
