package podinit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary be _pod-init: a child started with
// GLIA_PODINIT_TEST=1 runs Main on its arguments.
func TestMain(m *testing.M) {
	if os.Getenv("GLIA_PODINIT_TEST") == "1" {
		if err := Main(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "pod-init:", err)
			os.Exit(128)
		}
		os.Exit(0) // unreachable: Main execs
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// runContainer runs o as a container (new mount and UTS namespaces) and
// returns its combined output; it fails the test on a non-zero exit.
func runContainer(t *testing.T, o Options) string {
	t.Helper()
	out, err := runContainerErr(t, o)
	if err != nil {
		t.Fatalf("container failed: %v\n%s", err, out)
	}
	return out
}

func runContainerErr(t *testing.T, o Options) (string, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, o.Args()...)
	cmd.Env = []string{"GLIA_PODINIT_TEST=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("container did not finish:\n%s", buf.String())
	}
	return buf.String(), err
}

func mountTable(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPrivilegedRootFS runs real containers through Main and checks what
// they see and that the host sees nothing of them.
func TestPrivilegedRootFS(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	vol := filepath.Join(base, "vol")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "greeting"), []byte("hello from the volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(base, "prog")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho image file ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"resolv.conf": "nameserver 198.18.128.10\n", "hosts": "127.0.0.1 localhost\n198.19.1.5 web-0\n", "hostname": "web-0\n"} {
		if err := os.WriteFile(filepath.Join(base, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	hostHostname, _ := os.Hostname()
	before := mountTable(t)
	marker := "glia-podinit-test-" + filepath.Base(base)

	t.Run("unprivileged", func(t *testing.T) {
		scratch := filepath.Join(base, "scratch-1")
		if err := os.Mkdir(scratch, 0o700); err != nil {
			t.Fatal(err)
		}
		script := strings.Join([]string{
			"set -e",
			// Writes to the root land in the container's scratch.
			"echo written > /etc/" + marker,
			"mkdir -p /usr/" + marker + " && rm -f /etc/hostname.bak",
			"cat /etc/" + marker,
			"cat /data/greeting",
			"echo from-container > /data/written",
			"ro=$(touch /ro/x 2>&1 || echo read-only); echo ro:$ro",
			"/usr/local/bin/prog-in-image",
			"cat /etc/resolv.conf /etc/hosts; hostname",
			"test -c /dev/null && echo dev-null-ok",
			"test ! -e /dev/vda && echo no-host-disk",
			"ls /proc/1/ >/dev/null && echo proc-ok",
			"grep -c ' / ' /proc/self/mountinfo | sed 's/^/root-mounts:/'",
			"grep '^CapEff' /proc/self/status",
			"echo tmp > /tmp/x && echo tmp-ok",
			"pwd",
		}, "\n")
		out := runContainer(t, Options{
			Hostname: "web-0", ResolvConf: filepath.Join(base, "resolv.conf"), Hosts: filepath.Join(base, "hosts"),
			HostnameFile: filepath.Join(base, "hostname"), Scratch: scratch, Dir: "/work/dir",
			Mounts: []Mount{
				{Source: prog, Target: "/usr/local/bin/prog-in-image", ReadOnly: true},
				{Source: vol, Target: "/data"},
				{Source: vol, Target: "/ro", ReadOnly: true},
			},
			Argv: []string{"sh", "-c", script},
		})
		for _, want := range []string{
			"written\n", "hello from the volume\n", "ro:", "Read-only file system", "image file ran\n",
			"nameserver 198.18.128.10\n", "198.19.1.5 web-0\n", "web-0\n", "dev-null-ok\n", "no-host-disk\n",
			"proc-ok\n", "tmp-ok\n", "/work/dir\n",
			"CapEff:\t00000000a80425fb\n", // the default runtime set
		} {
			if !strings.Contains(out, want) {
				t.Errorf("container output lacks %q:\n%s", want, out)
			}
		}
		if b, err := os.ReadFile(filepath.Join(vol, "written")); err != nil || string(b) != "from-container\n" {
			t.Errorf("write through the volume: %q, %v", b, err)
		}
	})

	t.Run("privileged", func(t *testing.T) {
		scratch := filepath.Join(base, "scratch-2")
		if err := os.Mkdir(scratch, 0o700); err != nil {
			t.Fatal(err)
		}
		out := runContainer(t, Options{
			Scratch: scratch, Privileged: true,
			Argv: []string{"sh", "-c", "grep '^CapEff' /proc/self/status; ls /dev | tr '\\n' ' '; echo; test -e /sys/fs/cgroup && echo sys-ok; echo x > /etc/" + marker},
		})
		// A privileged container keeps every capability the runner has.
		status, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		var own string
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "CapEff:") {
				own = l + "\n"
			}
		}
		if own == "" || !strings.Contains(out, own) {
			t.Errorf("privileged container's capabilities differ from the runner's %q:\n%s", own, out)
		}
		if !strings.Contains(out, " null ") || !strings.Contains(out, "sys-ok") {
			t.Errorf("privileged container's /dev or /sys:\n%s", out)
		}
	})

	t.Run("as a user", func(t *testing.T) {
		scratch := filepath.Join(base, "scratch-user")
		if err := os.Mkdir(scratch, 0o700); err != nil {
			t.Fatal(err)
		}
		uid, gid := 1000, 3000
		out := runContainer(t, Options{Scratch: scratch, UID: &uid, GID: &gid, Groups: []int{2000},
			Argv: []string{"sh", "-c", "id -u; id -g; id -G; grep '^CapEff' /proc/self/status; touch /etc/x 2>&1 || true"}})
		for _, want := range []string{"1000\n3000\n", "2000", "CapEff:\t0000000000000000\n", "Permission denied"} {
			if !strings.Contains(out, want) {
				t.Errorf("container as user 1000 lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("setup error", func(t *testing.T) {
		scratch := filepath.Join(base, "scratch-3")
		if err := os.Mkdir(scratch, 0o700); err != nil {
			t.Fatal(err)
		}
		out, err := runContainerErr(t, Options{Scratch: scratch, Mounts: []Mount{{Source: vol, Target: "/data", Propagation: PropagationShared}}, Argv: []string{"true"}})
		if err == nil || !strings.Contains(out, "mountPropagation Bidirectional needs") {
			t.Errorf("a Bidirectional source that is no shared mount point: %v\n%s", err, out)
		}
		if err := os.Mkdir(filepath.Join(base, "scratch-4"), 0o700); err != nil {
			t.Fatal(err)
		}
		out, err = runContainerErr(t, Options{Scratch: filepath.Join(base, "scratch-4"), Argv: []string{"no-such-program-anywhere"}})
		if err == nil || !strings.Contains(out, "executable file not found") {
			t.Errorf("a missing program: %v\n%s", err, out)
		}
	})

	// The host is untouched: no file, no mount, same resolv.conf and hostname.
	for _, p := range []string{"/etc/" + marker, "/usr/" + marker} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("container write reached the host: %s exists", p)
			os.RemoveAll(p)
		}
	}
	if b, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(b, hostResolv) {
		t.Errorf("host /etc/resolv.conf changed")
	}
	if h, _ := os.Hostname(); h != hostHostname {
		t.Errorf("host hostname changed to %q", h)
	}
	// Other tests on this machine may mount things meanwhile: look for the
	// containers' mounts only.
	for _, l := range strings.Split(mountTable(t), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || strings.Contains(before, l) {
			continue
		}
		switch p := f[4]; {
		case strings.HasPrefix(p, base), strings.HasPrefix(p, "/etc/"), strings.HasPrefix(p, "/usr/"),
			p == "/data", p == "/ro", p == "/tmp", p == "/run", p == "/proc", p == "/sys", p == "/dev", p == "/":
			t.Errorf("a container's mount reached the host: %s", l)
		}
	}
	if _, err := os.Stat("/work/dir"); err == nil {
		t.Errorf("the container's working directory was created on the host")
	}
}
