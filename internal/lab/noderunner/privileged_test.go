package noderunner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/lab/images"
	"glia.dev/glia/internal/lab/podinit"
	"glia.dev/glia/internal/netnsfile"
)

// TestMain lets the test binary stand in for the glia binary: Spawn starts
// `SELF lab _pod-init ...`, and built-in images run as `SELF lab _image ...`.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == testPluginName {
		os.Exit(runTestPlugin())
	}
	if len(os.Args) > 2 && os.Args[1] == "lab" && os.Args[2] == "_pod-init" {
		if err := podinit.Main(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "pod-init:", err)
			os.Exit(1)
		}
		os.Exit(0) // unreachable: Main execs
	}
	if len(os.Args) > 2 && os.Args[1] == "lab" && os.Args[2] == "_log-shim" {
		if err := ShimMain(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "log-shim:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) > 3 && os.Args[1] == "lab" && os.Args[2] == "_image" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		if err := images.Run(ctx, os.Args[3], os.Args[4:], os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "image:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func randHex(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testCgroup makes a cgroup v2 directory for the test, or returns "" when
// cgroup v2 is not mounted where the lab expects it.
func testCgroup(t *testing.T) string {
	t.Helper()
	root := "/sys/fs/cgroup/unified"
	if err := checkCgroup2(root); err != nil {
		root = "/sys/fs/cgroup"
		if err := checkCgroup2(root); err != nil {
			t.Logf("no cgroup v2 mount; spawning without a cgroup")
			return ""
		}
	}
	dir := filepath.Join(root, "glia-noderunner-test-"+randHex(t))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeCgroup(context.Background(), dir); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return dir
}

// scratchDir makes an empty directory for a container's scratch tmpfs.
func scratchDir(t *testing.T, dir string) string {
	t.Helper()
	p, err := os.MkdirTemp(dir, "scratch-")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func nsID(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func TestPrivilegedSpawnPodProcess(t *testing.T) {
	requireRoot(t)
	hostResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	hostHostname, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	podNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		podNS.Close()
		testutils.UnmountNS(podNS)
	})
	cgroup := testCgroup(t)

	dir := t.TempDir()
	resolv := "nameserver 198.18.128.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	for name, content := range map[string]string{"resolv.conf": resolv, "hostname": "web-7f9c\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "shop_web-7f9c_web.log")
	const marker = "=== end ==="
	cmd, err := Spawn(SpawnSpec{
		SelfExe:   self,
		NetNSPath: podNS.Path(),
		CgroupDir: cgroup,
		Init: podinit.Options{
			Scratch:      scratchDir(t, dir),
			Hostname:     "web-7f9c",
			ResolvConf:   filepath.Join(dir, "resolv.conf"),
			HostnameFile: filepath.Join(dir, "hostname"),
			Argv:         []string{"sh", "-c", "cat /etc/resolv.conf; echo ---; hostname; echo ---; cat /etc/hostname; echo '" + marker + "'; exec sleep 1000"},
		},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		IO:  ContainerIO{LogPath: logPath, AttachSocket: AttachSocketPath(dir, "web")},
	})
	if err != nil {
		t.Fatal(err)
	}
	proc := newChildProcess(cmd)
	t.Cleanup(func() {
		proc.Signal(syscall.SIGKILL)
		<-proc.Done()
	})
	pid := proc.PID()

	// Wait until the program printed everything (or died).
	var out []byte
	eventually(t, "program output", func() (bool, error) {
		select {
		case <-proc.Done():
			b, _ := logText(logPath)
			return false, fmt.Errorf("program exited with %d: %s", proc.ExitCode(), b)
		default:
		}
		out, err = logText(logPath)
		return bytes.Contains(out, []byte(marker)), err
	})
	want := resolv + "---\nweb-7f9c\n---\nweb-7f9c\n" + marker + "\n"
	if string(out) != want {
		t.Errorf("program saw:\n%s\nwant:\n%s", out, want)
	}

	// The process (now `sleep`, same PID) lives in the pod's network
	// namespace and in mount and UTS namespaces of its own.
	if got, want := nsID(t, fmt.Sprintf("/proc/%d/ns/net", pid)), nsID(t, podNS.Path()); got != want {
		t.Errorf("process netns %s, want the pod's %s", got, want)
	}
	for _, kind := range []string{"mnt", "uts"} {
		if nsID(t, fmt.Sprintf("/proc/%d/ns/%s", pid, kind)) == nsID(t, "/proc/self/ns/"+kind) {
			t.Errorf("process shares the runner's %s namespace", kind)
		}
	}
	if cgroup != "" {
		pids, err := cgroupPIDs(cgroup)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range pids {
			found = found || p == pid
		}
		if !found {
			t.Errorf("process %d not in pod cgroup %s (has %v)", pid, cgroup, pids)
		}
	}
	if st, _ := procStartTime(pid); st != proc.StartTime() || st == 0 {
		t.Errorf("start time %d, recorded %d", st, proc.StartTime())
	}
	// Adoption sees the same process.
	adopted, err := adoptProcess(pid, proc.StartTime())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adoptProcess(pid, proc.StartTime()+1); err == nil {
		t.Error("adopted a process with a different start time")
	}

	// The host is untouched.
	afterResolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hostResolv, afterResolv) {
		t.Errorf("host /etc/resolv.conf changed:\n%s", afterResolv)
	}
	if h, _ := os.Hostname(); h != hostHostname {
		t.Errorf("host hostname changed to %q", h)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == "/etc/resolv.conf" || f[4] == "/etc/hostname") && strings.Contains(l, dir) {
			t.Errorf("pod mount leaked to the host: %s", l)
		}
	}

	// SIGTERM ends it; the adopted watcher sees the exit too.
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-proc.Done()
	<-adopted.Done()
	if code := proc.ExitCode(); code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit code %d, want %d", code, 128+int(syscall.SIGTERM))
	}
}

func TestPrivilegedNetNSLifecycle(t *testing.T) {
	requireRoot(t)
	name := PodNetNSName("test-"+randHex(t), "0123456789")
	path, err := createNetNS(NetNSDir, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNetNS(path) })
	if !netnsfile.IsNamespace(path) {
		t.Fatalf("%s is not a network namespace", path)
	}
	// Its loopback is up, as a container runtime leaves a sandbox.
	err = ns.WithNetNSPath(path, func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			return errors.New("lo is down in the pod namespace")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cur, err := ns.GetCurrentNS()
		if err != nil {
			t.Fatal(err)
		}
		defer cur.Close()
		if nsID(t, path) == nsID(t, cur.Path()) {
			t.Fatal("created namespace is the caller's own")
		}
	}()
	// Creating it again reuses it.
	again, err := createNetNS(NetNSDir, name)
	if err != nil || again != path {
		t.Fatalf("createNetNS again = %q, %v", again, err)
	}
	if err := removeNetNS(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file still there: %v", err)
	}
	if err := removeNetNS(path); err != nil {
		t.Errorf("removing a missing namespace: %v", err)
	}
}
