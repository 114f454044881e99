package image

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// TestPrivilegedImageRunsIptables unpacks glia's image (fixture binaries,
// this host's iptables/nftables) and runs its programs chrooted into it, in
// a network namespace of the test's own: the loader, the libraries and the
// xtables modules the image carries must be enough to install and list the
// masquerade rule glia's legacy datapath installs.
func TestPrivilegedImageRunsIptables(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chroot and a network namespace")
	}
	requireHostPackages(t)
	img, _, err := Glia(context.Background(), fixtureOptions(t))
	if err != nil {
		t.Fatalf("Glia: %v", err)
	}
	root := t.TempDir()
	unpack(t, mutate.Extract(img), root)

	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		testutils.UnmountNS(n)
	})
	run := func(args ...string) string {
		t.Helper()
		var out []byte
		err := n.Do(func(ns.NetNS) error {
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir = "/"
			cmd.Env = []string{"PATH=" + PATH}
			cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
			var err error
			out, err = cmd.CombinedOutput()
			return err
		})
		if err != nil {
			t.Fatalf("%s in the image: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if got := run("/usr/bin/glia-agent"); got != "fixture glia-agent\n" {
		t.Errorf("glia-agent printed %q", got)
	}
	rule := []string{"-s", "198.19.1.0/24", "!", "-d", "198.19.0.0/16", "!", "-o", "gl+",
		"-m", "comment", "--comment", "glia: masquerade traffic leaving the cluster", "-j", "MASQUERADE"}
	run("/usr/sbin/iptables", "-w", "-t", "nat", "-N", "GLIA-POSTROUTING")
	run(append([]string{"/usr/sbin/iptables", "-w", "-t", "nat", "-A", "GLIA-POSTROUTING"}, rule...)...)
	run("/usr/sbin/iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "glia: masquerade", "-j", "GLIA-POSTROUTING")
	save := run("/usr/sbin/iptables-save", "-t", "nat")
	for _, want := range []string{
		`-A GLIA-POSTROUTING -s 198.19.1.0/24 ! -d 198.19.0.0/16 ! -o gl+ -m comment --comment "glia: masquerade traffic leaving the cluster" -j MASQUERADE`,
		`-A POSTROUTING -m comment --comment "glia: masquerade" -j GLIA-POSTROUTING`,
	} {
		if !strings.Contains(save, want) {
			t.Errorf("iptables-save in the image lacks %q:\n%s", want, save)
		}
	}
	restore := "*filter\n:GLIA-TEST - [0:0]\n-A GLIA-TEST -p icmp -j ACCEPT\nCOMMIT\n"
	if err := n.Do(func(ns.NetNS) error {
		cmd := exec.Command("/usr/sbin/iptables-restore", "-w", "--noflush")
		cmd.Dir = "/"
		cmd.Stdin = strings.NewReader(restore)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatalf("iptables-restore in the image: %v", err)
	}
	if got := run("/usr/sbin/iptables", "-w", "-S", "GLIA-TEST"); !strings.Contains(got, "-A GLIA-TEST -p icmp -j ACCEPT") {
		t.Errorf("iptables -S GLIA-TEST after iptables-restore:\n%s", got)
	}
	if got := run("/usr/sbin/nft", "list", "ruleset"); !strings.Contains(got, "masquerade") {
		t.Errorf("nft list ruleset in the image lacks the masquerade rule:\n%s", got)
	}
	run("/usr/sbin/ip6tables", "-w", "-t", "nat", "-N", "GLIA-TEST6")
	if got := run("/usr/sbin/ip6tables-save", "-t", "nat"); !strings.Contains(got, ":GLIA-TEST6 - [0:0]") {
		t.Errorf("ip6tables-save in the image lacks chain GLIA-TEST6:\n%s", got)
	}
}

// unpack writes a flattened image's tar stream into dir. Entries never
// lie under a symlink (Validate), so nothing is written through one.
func unpack(t *testing.T, rc io.ReadCloser, dir string) {
	t.Helper()
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean("/" + hdr.Name)
		dst := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dst, hdr.FileInfo().Mode()); err != nil {
				t.Fatal(err)
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(hdr.Linkname, dst); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, hdr.FileInfo().Mode())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: unexpected tar type %c", hdr.Name, hdr.Typeflag)
		}
	}
}
