package lab

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	discoveryfake "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/restmapper"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"

	"glia.dev/glia/internal/atomicfile"
)

func TestLayout(t *testing.T) {
	l := Layout{Base: "/run/glia-lab", CgroupRoot: "/sys/fs/cgroup/unified/glia-lab", BPFRoot: "/sys/fs/bpf/glia-lab", BinDir: "/opt/glia/bin"}
	n := NodeName(2)
	got := map[string]string{
		"StateFile":      l.StateFile(),
		"Kubeconfig":     l.Kubeconfig(),
		"PKIDir":         l.PKIDir(),
		"EtcdDir":        l.EtcdDir(),
		"LogDir":         l.LogDir(),
		"NodeDir":        l.NodeDir(n),
		"AgentSocket":    l.AgentSocket(n),
		"AgentStateDir":  l.AgentStateDir(n),
		"RunnerStateDir": l.RunnerStateDir(n),
		"CNIConfDir":     l.CNIConfDir(n),
		"CNIBinDir":      l.CNIBinDir(n),
		"NodeRoot":       l.NodeRoot(n),
		"AgentBPFDir":    l.AgentBPFDir(n),
		"ChartDir":       l.ChartDir(),
		"NodeCgroup":     l.NodeCgroup(n),
		"NodeBPFDir":     l.NodeBPFDir(n),
		"Bin":            l.Bin("glia-agent"),
		"NodeNetns":      NodeNetns(n),
		"hostVeth":       hostVeth(2),
	}
	want := map[string]string{
		"StateFile":      "/run/glia-lab/lab.json",
		"Kubeconfig":     "/run/glia-lab/kubeconfig",
		"PKIDir":         "/run/glia-lab/pki",
		"EtcdDir":        "/run/glia-lab/etcd",
		"LogDir":         "/run/glia-lab/logs",
		"NodeDir":        "/run/glia-lab/nodes/lab-node-2",
		"AgentSocket":    "/run/glia-lab/nodes/lab-node-2/root/var/run/glia/glia.sock",
		"AgentStateDir":  "/run/glia-lab/nodes/lab-node-2/root/var/lib/glia",
		"RunnerStateDir": "/run/glia-lab/nodes/lab-node-2/runner",
		"CNIConfDir":     "/run/glia-lab/nodes/lab-node-2/root/etc/cni/net.d",
		"CNIBinDir":      "/run/glia-lab/nodes/lab-node-2/root/opt/cni/bin",
		"NodeRoot":       "/run/glia-lab/nodes/lab-node-2/root",
		"AgentBPFDir":    "/sys/fs/bpf/glia-lab/lab-node-2/glia",
		"ChartDir":       "/run/glia-lab/chart",
		"NodeCgroup":     "/sys/fs/cgroup/unified/glia-lab/lab-node-2",
		"NodeBPFDir":     "/sys/fs/bpf/glia-lab/lab-node-2",
		"Bin":            "/opt/glia/bin/glia-agent",
		"NodeNetns":      "glia-lab-lab-node-2",
		"hostVeth":       "glab-n2",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layout (-want +got):\n%s", diff)
	}
	// Every node's paths are its own: nothing is shared between two nodes.
	a, b := NodeName(1), NodeName(11)
	for _, f := range []func(string) string{l.NodeDir, l.AgentSocket, l.AgentStateDir, l.RunnerStateDir, l.CNIConfDir, l.CNIBinDir, l.NodeRoot, l.NodeCgroup, l.NodeBPFDir, NodeNetns} {
		if pa, pb := f(a), f(b); pa == pb || strings.HasPrefix(pb, pa+"/") || strings.HasPrefix(pa, pb+"/") {
			t.Errorf("paths of %s and %s overlap: %s, %s", a, b, pa, pb)
		}
	}
	// Interface names fit IFNAMSIZ for every node.
	if name := hostVeth(MaxNodes); len(name) > 15 {
		t.Errorf("hostVeth(%d) = %q is longer than 15 bytes", MaxNodes, name)
	}
}

func TestDefaultLayout(t *testing.T) {
	root, err := cgroupV2Root()
	if err != nil {
		t.Skipf("no cgroup v2 here: %v", err)
	}
	l, err := DefaultLayout("/opt/glia/bin")
	if err != nil {
		t.Fatal(err)
	}
	want := Layout{Base: "/run/glia-lab", CgroupRoot: filepath.Join(root, "glia-lab"), BPFRoot: "/sys/fs/bpf/glia-lab", BinDir: "/opt/glia/bin"}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("DefaultLayout (-want +got):\n%s", diff)
	}
}

// TestAddressPlan: every address and range of the lab lies in LabCIDR, the
// one range the root namespace blackholes, and the ranges do not overlap.
func TestAddressPlan(t *testing.T) {
	prefixes := map[string]netip.Prefix{"underlay": UnderlayCIDR, "cluster": ClusterCIDR, "service": ServiceCIDR, "outside": OutsideCIDR}
	for name, p := range prefixes {
		if !LabCIDR.Contains(p.Addr()) || p.Bits() < LabCIDR.Bits() {
			t.Errorf("%s range %s lies outside the lab's %s", name, p, LabCIDR)
		}
		for other, q := range prefixes {
			if other != name && p.Overlaps(q) {
				t.Errorf("%s range %s overlaps %s range %s", name, p, other, q)
			}
		}
	}
	for name, a := range map[string]netip.Addr{"bridge": BridgeAddr, "gateway": GatewayAddr, "outside server": OutsideAddr, "cluster DNS": ClusterDNS, "last node": NodeIP(MaxNodes)} {
		if !LabCIDR.Contains(a) {
			t.Errorf("%s address %s lies outside the lab's %s", name, a, LabCIDR)
		}
	}
	if !OutsideCIDR.Contains(OutsideAddr) || !ServiceCIDR.Contains(ClusterDNS) {
		t.Errorf("outside server %s or cluster DNS %s is not in its range", OutsideAddr, ClusterDNS)
	}
	if len(blackholes) != 1 || blackholes[0] != LabCIDR {
		t.Errorf("blackholes = %v, want just %s", blackholes, LabCIDR)
	}
}

func TestNodeNamesAndAddresses(t *testing.T) {
	tests := []struct {
		i    int
		name string
		ip   string
	}{
		{1, "lab-node-1", "198.18.0.11"},
		{2, "lab-node-2", "198.18.0.12"},
		{10, "lab-node-10", "198.18.0.20"},
		{MaxNodes, "lab-node-50", "198.18.0.60"},
	}
	for _, tt := range tests {
		if got := NodeName(tt.i); got != tt.name {
			t.Errorf("NodeName(%d) = %q, want %q", tt.i, got, tt.name)
		}
		ip := NodeIP(tt.i)
		if ip.String() != tt.ip {
			t.Errorf("NodeIP(%d) = %s, want %s", tt.i, ip, tt.ip)
		}
		if !UnderlayCIDR.Contains(ip) || ip == BridgeAddr || ip == GatewayAddr {
			t.Errorf("NodeIP(%d) = %s is not a free underlay address", tt.i, ip)
		}
		if i, err := NodeIndex(tt.name); err != nil || i != tt.i {
			t.Errorf("NodeIndex(%q) = %d, %v; want %d", tt.name, i, err, tt.i)
		}
	}
	// Every name NodeIndex accepts is one NodeName gives.
	for _, bad := range []string{"", "lab-node-", "lab-node-x", "node-1", "lab-node-0", "lab-node--1", "lab-node-+1", "lab-node-01", "lab-node-51", "lab-node-1/../x"} {
		if i, err := NodeIndex(bad); err == nil {
			t.Errorf("NodeIndex(%q) = %d, want an error", bad, i)
		} else if !strings.Contains(err.Error(), "lab-node-N") {
			t.Errorf("NodeIndex(%q) error %q does not say what a lab node name looks like", bad, err)
		}
	}
}

func TestPKI(t *testing.T) {
	p := pki{dir: filepath.Join(t.TempDir(), "pki")}
	token, err := p.generate()
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	if len(token) != 48 {
		t.Errorf("token %q: want 48 hex characters", token)
	}

	readCert := func(path string) *x509.Certificate {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "CERTIFICATE" {
			t.Fatalf("%s: no PEM certificate", path)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca, srv := readCert(p.CACert()), readCert(p.ServerCert())
	if !ca.IsCA {
		t.Error("the CA certificate is not a CA")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, host := range []string{"198.18.0.1", "198.18.128.1", "127.0.0.1", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("the CA does not verify the API server for %s: %v", host, err)
		}
	}
	if err := srv.VerifyHostname("198.18.0.2"); err == nil {
		t.Error("the API server certificate is valid for 198.18.0.2 too")
	}
	if want := ServiceCIDR.Addr().Next(); want != netip.MustParseAddr("198.18.128.1") {
		t.Errorf("kubernetes Service IP = %s", want)
	}

	// The server key matches the certificate, the SA keys match each other.
	if _, err := keyMatchesCert(p.ServerCert(), p.ServerKey()); err != nil {
		t.Errorf("server certificate and key: %v", err)
	}
	saPub, err := os.ReadFile(p.SAPub())
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(saPub); blk == nil || blk.Type != "PUBLIC KEY" {
		t.Errorf("sa.pub is not a PEM public key")
	} else if _, err := x509.ParsePKIXPublicKey(blk.Bytes); err != nil {
		t.Errorf("sa.pub: %v", err)
	}

	// Private keys and the token file are for root only.
	for _, f := range []string{filepath.Join(p.dir, "ca.key"), p.ServerKey(), p.SAKey(), p.TokenFile()} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}

	// Token file: token,user,uid,"group" as kube-apiserver --token-auth-file reads it.
	tf, err := os.ReadFile(p.TokenFile())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(tf), token+",glia-lab-admin,glia-lab-admin,system:masters\n"; got != want {
		t.Errorf("token file = %q, want %q", got, want)
	}

	// The kubeconfig parses, points at the API server and carries the CA and token.
	kc, err := p.kubeconfig(token)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load([]byte(kc))
	if err != nil {
		t.Fatalf("kubeconfig does not parse: %v\n%s", err, kc)
	}
	rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(p.CACert())
	if rc.Host != "https://198.18.0.1:6443" {
		t.Errorf("server = %q", rc.Host)
	}
	if !bytes.Equal(rc.TLSClientConfig.CAData, caPEM) {
		t.Error("kubeconfig's certificate-authority-data is not the lab CA")
	}
	if rc.BearerToken != token {
		t.Errorf("kubeconfig token = %q, want %q", rc.BearerToken, token)
	}

	// A second generate makes a new CA and token.
	token2, err := p.generate()
	if err != nil {
		t.Fatal(err)
	}
	if token2 == token || readCert(p.CACert()).Equal(ca) {
		t.Error("generate reused the old token or CA")
	}
}

// keyMatchesCert parses the key and compares its public half with the certificate's.
func keyMatchesCert(certFile, keyFile string) (any, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM key")
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	cblk, _ := pem.Decode(cb)
	c, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, err
	}
	if !k.PublicKey.Equal(c.PublicKey) {
		return nil, errors.New("key does not match certificate")
	}
	return k, nil
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	for _, content := range []string{"one", "two, longer than one"} {
		if err := atomicfile.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Errorf("read back %q, %v; want %q", b, err, content)
		}
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d files, want only f.json (no temporary left)", len(ents))
	}
	// A failed write leaves the old file and no temporary.
	if err := atomicfile.WriteFile(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Error("writeFileAtomic into a missing directory succeeded")
	}
	if err := os.Mkdir(filepath.Join(dir, "isdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "isdir"), []byte("x"), 0o600); err == nil {
		t.Error("writeFileAtomic over a directory succeeded")
	}
	ents, _ = os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("after failed writes the directory holds %d entries, want 2", len(ents))
	}
}

func TestStateRoundTrip(t *testing.T) {
	l := New(slog.New(slog.NewTextHandler(io.Discard, nil)), Layout{Base: t.TempDir()}, io.Discard)
	if _, err := l.loadState(); !errors.Is(err, ErrNoLab) {
		t.Fatalf("loadState without a lab = %v, want ErrNoLab", err)
	}
	st := &State{Nodes: 2, Set: map[string]string{"routing-mode": "native"}, Token: "abc", MountedBPFFS: true}
	st.add(Proc{Name: "lab-node-2/agent", PID: 42, StartTime: 7, Args: []string{"glia-agent", "--node-name", "lab-node-2"}, Netns: "glia-lab-lab-node-2", Cgroup: "/cg/x", Log: "/l"})
	st.add(Proc{Name: "apiserver", PID: 41, StartTime: 6, Args: []string{"glia-k8s", "apiserver"}, Log: "/a"})
	if err := l.saveState(st); err != nil {
		t.Fatal(err)
	}
	got, err := l.loadState()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st, got); diff != "" {
		t.Errorf("state round trip (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"apiserver", "lab-node-2/agent"}, got.procNames()); diff != "" {
		t.Errorf("procNames (-want +got):\n%s", diff)
	}
	if fi, err := os.Stat(l.layout.StateFile()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v, %v; want mode 0600", fi, err)
	}
	if !l.hasNode(got, "lab-node-2") || l.hasNode(got, "lab-node-3") {
		t.Error("hasNode does not follow the state's node count")
	}

	if err := os.WriteFile(l.layout.StateFile(), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.loadState(); err == nil || errors.Is(err, ErrNoLab) || !strings.Contains(err.Error(), "glia lab down") {
		t.Errorf("loadState of a corrupt file = %v, want an error saying to run glia lab down", err)
	}
}

func TestLock(t *testing.T) {
	l := New(slog.New(slog.NewTextHandler(io.Discard, nil)), Layout{Base: filepath.Join(t.TempDir(), "lab")}, io.Discard)
	unlock, err := l.lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.lock(); err == nil || !strings.Contains(err.Error(), "another glia lab command") {
		t.Errorf("second lock = %v, want refused", err)
	}
	unlock()
	unlock2, err := l.lock()
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

func TestProcAlive(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	st, err := procStartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	self, err := procStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st < self {
		t.Errorf("child start time %d is before ours %d", st, self)
	}
	p := Proc{Name: "sleep", PID: pid, StartTime: st}
	tests := []struct {
		name string
		p    Proc
		want bool
	}{
		{"the process we started", p, true},
		{"a recycled PID (other start time)", Proc{PID: pid, StartTime: st + 1}, false},
		{"no PID", Proc{StartTime: st}, false},
		{"negative PID", Proc{PID: -1, StartTime: st}, false},
		{"a PID that does not exist", Proc{PID: 1 << 30, StartTime: st}, false},
	}
	for _, tt := range tests {
		if got := tt.p.Alive(); got != tt.want {
			t.Errorf("%s: Alive = %v, want %v", tt.name, got, tt.want)
		}
	}
	// Signalling a recycled PID does nothing.
	if err := (Proc{PID: pid, StartTime: st + 1}).Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !p.Alive() {
		t.Fatal("Signal on a recycled PID killed the process")
	}

	// Killed but not yet reaped: a zombie is not alive.
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Wait for it to exit without reaping it (WNOWAIT): it stays a zombie.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Error("a zombie counts as alive")
	}
	if err := p.WaitGone(0); err != nil {
		t.Errorf("WaitGone on a zombie: %v", err)
	}
	cmd.Wait()
	if p.Alive() {
		t.Error("a reaped process counts as alive")
	}
	if _, err := procStartTime(pid); err == nil {
		t.Error("procStartTime of a reaped process succeeded")
	}
}

func TestProcStop(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	st, err := procStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := Proc{Name: "sleep", PID: cmd.Process.Pid, StartTime: st}
	if err := p.Stop(0); err != nil {
		t.Fatal(err)
	}
	err = <-done
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("sleep ended with %v, want killed by a signal", err)
	}
}

func TestCloseInheritedFDs(t *testing.T) {
	fd, err := unix.Open("/dev/null", unix.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC != 0 {
		t.Fatal("fd opened without O_CLOEXEC has FD_CLOEXEC")
	}
	closeInheritedFDs()
	flags, err = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Error("closeInheritedFDs left an inherited fd without FD_CLOEXEC")
	}
	// stdin, stdout and stderr stay inheritable.
	for _, std := range []int{0, 1, 2} {
		if f, err := unix.FcntlInt(uintptr(std), unix.F_GETFD, 0); err == nil && f&unix.FD_CLOEXEC != 0 {
			t.Errorf("fd %d got FD_CLOEXEC", std)
		}
	}
}

func TestPrivilegedKillCgroupTree(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a cgroup")
	}
	root, err := cgroupV2Root()
	if err != nil {
		t.Skipf("no cgroup v2: %v", err)
	}
	var rnd [6]byte
	if _, err := unix.Getrandom(rnd[:], 0); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "glia-test-"+hexString(rnd[:]))
	child := filepath.Join(dir, "child")
	if err := os.MkdirAll(child, 0o755); err != nil {
		t.Skipf("cannot create a cgroup under %s: %v", root, err)
	}
	t.Cleanup(func() { killCgroupTree(dir) })
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		t.Skipf("kernel without cgroup.kill (needs 5.14): %v", err)
	}

	var cmds []*exec.Cmd
	var dones []chan error
	for _, cg := range []string{dir, child} {
		fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sleep", "30")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		err = cmd.Start()
		unix.Close(fd)
		if err != nil {
			t.Fatalf("start sleep in %s: %v", cg, err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill() })
		cmds, dones = append(cmds, cmd), append(dones, done)

		procs, err := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(procs)) != strconv.Itoa(cmd.Process.Pid) {
			t.Fatalf("%s holds %q, want the sleep (pid %d)", cg, procs, cmd.Process.Pid)
		}
	}

	if err := killCgroupTree(dir); err != nil {
		t.Fatalf("killCgroupTree: %v", err)
	}
	for i, done := range dones {
		err := <-done
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("sleep %d ended with %v, want SIGKILL", cmds[i].Process.Pid, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s still there: %v", dir, err)
	}
	// Again, and on a path that never existed: nothing to do.
	if err := killCgroupTree(dir); err != nil {
		t.Errorf("killCgroupTree on a removed cgroup: %v", err)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// fakeApplier is an applier on fake discovery and a fake dynamic client
// that records every apply.
func fakeApplier(t *testing.T) (*applier, *[]k8stesting.PatchAction) {
	t.Helper()
	disc := &discoveryfake.FakeDiscovery{Fake: &k8stesting.Fake{}}
	disc.Resources = []*metav1.APIResourceList{
		{GroupVersion: "v1", APIResources: []metav1.APIResource{
			{Name: "namespaces", Kind: "Namespace", Namespaced: false, Verbs: []string{"patch"}},
			{Name: "services", Kind: "Service", Namespaced: true, Verbs: []string{"patch"}},
			{Name: "serviceaccounts", Kind: "ServiceAccount", Namespaced: true, Verbs: []string{"patch"}},
			{Name: "configmaps", Kind: "ConfigMap", Namespaced: true, Verbs: []string{"patch"}},
		}},
		{GroupVersion: "apps/v1", APIResources: []metav1.APIResource{
			{Name: "deployments", Kind: "Deployment", Namespaced: true, Verbs: []string{"patch"}},
		}},
		{GroupVersion: "rbac.authorization.k8s.io/v1", APIResources: []metav1.APIResource{
			{Name: "clusterroles", Kind: "ClusterRole", Namespaced: false, Verbs: []string{"patch"}},
			{Name: "clusterrolebindings", Kind: "ClusterRoleBinding", Namespaced: false, Verbs: []string{"patch"}},
		}},
	}
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	var applied []k8stesting.PatchAction
	dyn.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		applied = append(applied, a.(k8stesting.PatchAction))
		return true, nil, nil
	})
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))}, &applied
}

func TestApply(t *testing.T) {
	a, applied := fakeApplier(t)
	manifest := `
apiVersion: v1
kind: Namespace
metadata:
  name: glia-system
---
# an empty document
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: no-namespace
data:
  k: v
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: glia
`
	if err := a.apply(context.Background(), []byte(manifest)); err != nil {
		t.Fatalf("apply: %v", err)
	}
	type rec struct{ Resource, Namespace, Name string }
	var got []rec
	for _, p := range *applied {
		got = append(got, rec{p.GetResource().Resource, p.GetNamespace(), p.GetName()})
		if p.GetPatchType() != types.ApplyPatchType {
			t.Errorf("%s: patch type %s, want server-side apply", p.GetName(), p.GetPatchType())
		}
		var obj map[string]any
		if err := json.Unmarshal(p.GetPatch(), &obj); err != nil || obj["kind"] == nil {
			t.Errorf("%s: patch body %q is not the object", p.GetName(), p.GetPatch())
		}
	}
	want := []rec{
		{"namespaces", "", "glia-system"},
		{"serviceaccounts", "kube-system", "coredns"},
		{"configmaps", "default", "no-namespace"},
		{"clusterroles", "", "glia"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}

	for _, tt := range []struct{ name, manifest, want string }{
		{"unknown kind", "apiVersion: glia.dev/v1alpha1\nkind: GliaNodeConfig\nmetadata:\n  name: x\n", "GliaNodeConfig x"},
		{"bad YAML", "apiVersion: v1\nkind: [Namespace\n", "decode manifest"},
	} {
		if err := a.apply(context.Background(), []byte(tt.manifest)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: apply = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

// TestEmbeddedManifests checks that every embedded manifest decodes and
// names kinds an API server serves, as `lab up` applies them.
func TestEmbeddedManifests(t *testing.T) {
	a, applied := fakeApplier(t)
	ents, err := manifests.ReadDir("manifests")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) == 0 {
		t.Fatal("no embedded manifests")
	}
	for _, e := range ents {
		b, err := manifests.ReadFile("manifests/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		before := len(*applied)
		if err := a.apply(context.Background(), b); err != nil {
			t.Errorf("%s: %v", e.Name(), err)
		}
		if len(*applied) == before {
			t.Errorf("%s applied nothing", e.Name())
		}
	}
	// The kube-dns Service has the cluster DNS address the nodes use.
	for _, p := range *applied {
		if p.GetResource().Resource != "services" {
			continue
		}
		var svc struct {
			Spec struct {
				ClusterIP string `json:"clusterIP"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(p.GetPatch(), &svc); err != nil {
			t.Fatal(err)
		}
		if ip := net.ParseIP(svc.Spec.ClusterIP); ip == nil || !ip.Equal(ClusterDNS.AsSlice()) {
			t.Errorf("Service %s/%s clusterIP %q, want %s", p.GetNamespace(), p.GetName(), svc.Spec.ClusterIP, ClusterDNS)
		}
	}
}

// Up refuses bad options before it takes the lock or changes anything.
func TestUpRefusesBadOptions(t *testing.T) {
	bin := t.TempDir()
	for _, b := range RequiredBinaries {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	base := filepath.Join(t.TempDir(), "lab")
	l := New(slog.New(slog.NewTextHandler(io.Discard, nil)), Layout{Base: base, BinDir: bin}, io.Discard)
	for _, tc := range []struct {
		name string
		o    UpOptions
		want string
	}{
		{"no nodes", UpOptions{Nodes: 0}, "--nodes 0"},
		{"chart directory without Chart.yaml", UpOptions{Nodes: 1, Chart: t.TempDir()}, "not a Helm chart directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Up(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Up = %v, want an error containing %q", err, tc.want)
			}
			if _, err := os.Stat(base); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Up refused but made %s (%v)", base, err)
			}
		})
	}
}
