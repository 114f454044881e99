package bpf

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

// socketClientEnv makes the test binary a socket client (see TestMain):
// "<mode> <addr>", mode tcp, udp (unconnected) or udp-connected.
const socketClientEnv = "GLIA_TEST_SOCKET_CLIENT"

func TestMain(m *testing.M) {
	if v := os.Getenv(socketClientEnv); v != "" {
		os.Exit(socketClient(v))
	}
	os.Exit(m.Run())
}

// clientResult is what a socket client reports, as a JSON line.
type clientResult struct {
	Local  string // its own address
	Remote string // the peer, as getpeername (TCP, connected UDP) or recvfrom (UDP) gives it
	Seen   string // its address as the echo server saw it
	Err    string
}

// socketClient connects (or sends) to an echo server once and reports.
func socketClient(spec string) int {
	var res clientResult
	mode, addr, _ := strings.Cut(spec, " ")
	err := func() error {
		msg := "hello"
		var reply string
		switch mode {
		case "tcp":
			c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			res.Local, res.Remote = c.LocalAddr().String(), c.RemoteAddr().String()
			if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
				return err
			}
			if reply, err = bufio.NewReader(c).ReadString('\n'); err != nil {
				return err
			}
		case "udp":
			c, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			to, err := net.ResolveUDPAddr("udp4", addr)
			if err != nil {
				return err
			}
			if _, err := c.WriteTo([]byte(msg+"\n"), to); err != nil {
				return err
			}
			buf := make([]byte, 512)
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return err
			}
			res.Local, res.Remote, reply = c.LocalAddr().String(), from.String(), string(buf[:n])
		case "udp-connected":
			c, err := net.DialTimeout("udp4", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			res.Local, res.Remote = c.LocalAddr().String(), c.RemoteAddr().String()
			if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
				return err
			}
			buf := make([]byte, 512)
			n, err := c.Read(buf)
			if err != nil {
				return err
			}
			reply = string(buf[:n])
		default:
			return fmt.Errorf("unknown mode %q", mode)
		}
		f := strings.Fields(reply)
		if len(f) != 2 || f[1] != msg {
			return fmt.Errorf("echo %q, want <addr> %s", reply, msg)
		}
		res.Seen = f[0]
		return nil
	}()
	if err != nil {
		res.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// testCgroup creates a throwaway cgroup v2 directory, removed at the end
// (after the cleanups registered later, which run first).
func testCgroup(t *testing.T) string {
	t.Helper()
	var root string
	for _, dir := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			root = dir
			break
		}
	}
	if root == "" {
		t.Skip("no cgroup v2 hierarchy mounted")
	}
	dir := filepath.Join(root, fmt.Sprintf("glia-test-%d-%x", os.Getpid(), rand.Uint32()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot create a cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	return dir
}

// runClient runs a socket client in n, in cgroup (when not "").
func runClient(t *testing.T, n ns.NetNS, cgroup, mode, addr string) clientResult {
	t.Helper()
	var out []byte
	must(t, n.Do(func(ns.NetNS) error {
		// the child inherits this thread's network namespace
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), socketClientEnv+"="+mode+" "+addr)
		cmd.Stderr = os.Stderr
		if cgroup != "" {
			f, err := os.Open(cgroup)
			if err != nil {
				return err
			}
			defer f.Close()
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
		}
		var err error
		out, err = cmd.Output()
		return err
	}))
	var res clientResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	return res
}

// udpEchoServer answers each datagram with the sender's address and the
// datagram.
func udpEchoServer(t *testing.T, n ns.NetNS, addr string) {
	t.Helper()
	var c net.PacketConn
	must(t, n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenPacket("udp4", addr)
		return err
	}))
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo([]byte(fmt.Sprintf("%s %s", from, buf[:n])), from)
		}
	}()
}

// The node's own processes in the socket load balancer's cgroup reach
// ClusterIPs and NodePorts on the node's address; pods in that cgroup
// are left to from_container, processes outside it are not touched, and
// turning the option off detaches the programs.
func TestPrivilegedSocketLB(t *testing.T) {
	requirePrivileged(t)
	cgroup := testCgroup(t)
	bpffs := privateBPFFS(t)
	node, pod1, pod2, outside := newNS(t), newNS(t), newNS(t), newNS(t)

	var lxc1, lxc2 netlink.Link
	must(t, node.Do(func(ns.NetNS) error {
		lxc1 = vethInto(t, "lxc1", pod1, "eth0")
		lxc2 = vethInto(t, "lxc2", pod2, "eth0")
		eth0 := vethInto(t, "eth0", outside, "ext0")
		a, _ := netlink.ParseAddr("198.18.0.11/24")
		return netlink.AddrAdd(eth0, a)
	}))
	setupPod(t, pod1, "198.19.1.10", lxc1.Attrs().HardwareAddr)
	setupPod(t, pod2, "198.19.1.20", lxc2.Attrs().HardwareAddr)
	echoServer(t, pod2, "198.19.1.20:8080")
	udpEchoServer(t, pod2, "198.19.1.20:5353")

	local := datapath.LocalNode{Name: "node1", IP: netip.MustParseAddr("198.18.0.11"), Device: "eth0",
		PodCIDR: netip.MustParsePrefix("198.19.1.0/24"), ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16")}
	opts := testOpts{RoutingMode: "native", KubeProxyReplacement: true, Masquerade: true, BPFMasquerade: true,
		HostRoutingBPF: true, LBAlgorithm: "maglev", BPFFSDir: filepath.Join(bpffs, "node1"), MTU: 1500,
		SocketLBCgroup: cgroup}
	eps := []*state.Endpoint{
		{Attachment: state.Attachment{ContainerID: "c1", IfName: "eth0"}, IP: netip.MustParseAddr("198.19.1.10"), HostIfName: "lxc1", Netns: pod1.Path()},
		{Attachment: state.Attachment{ContainerID: "c2", IfName: "eth0"}, IP: netip.MustParseAddr("198.19.1.20"), HostIfName: "lxc2", Netns: pod2.Path()},
	}
	backend := func(ap string) []state.Backend {
		return []state.Backend{{Addr: netip.MustParseAddrPort(ap), Ready: true}}
	}
	services := []svcPort{
		{Namespace: "default", Name: "echo", Protocol: "TCP", Frontend: netip.MustParseAddrPort("198.18.128.10:80"),
			NodePort: 30080, Backends: backend("198.19.1.20:8080")},
		{Namespace: "default", Name: "dns", Protocol: "UDP", Frontend: netip.MustParseAddrPort("198.18.128.10:53"),
			Backends: backend("198.19.1.20:5353")},
		{Namespace: "default", Name: "empty", Protocol: "TCP", Frontend: netip.MustParseAddrPort("198.18.128.12:80")},
	}
	var dp *Datapath
	start := func(opts testOpts) {
		t.Helper()
		must(t, node.Do(func(ns.NetNS) error {
			if dp != nil {
				dp.Close()
			}
			var err error
			if dp, err = New(testLogger(), local, opts.options()); err != nil {
				return err
			}
			ctx := context.Background()
			if err := initHost(ctx, dp); err != nil {
				return err
			}
			if err := syncEndpoints(ctx, dp, eps...); err != nil {
				return err
			}
			return syncServices(ctx, dp, services)
		}))
	}
	start(opts)
	// before the cgroup goes: detach, as turning the option off does
	t.Cleanup(func() {
		must(t, dp.detachSocketLB())
		dp.Close()
	})

	t.Run("node processes in the cgroup", func(t *testing.T) {
		for _, tc := range []struct {
			name, mode, addr string
			want             clientResult // Local is not compared; Seen by prefix
		}{
			{"tcp clusterip", "tcp", "198.18.128.10:80", clientResult{Remote: "198.18.128.10:80", Seen: "198.18.0.11:"}},
			{"udp clusterip", "udp", "198.18.128.10:53", clientResult{Remote: "198.18.128.10:53", Seen: "198.18.0.11:"}},
			{"connected udp clusterip", "udp-connected", "198.18.128.10:53", clientResult{Remote: "198.18.128.10:53", Seen: "198.18.0.11:"}},
			{"tcp nodeport on the node's address", "tcp", "198.18.0.11:30080", clientResult{Remote: "198.18.0.11:30080", Seen: "198.18.0.11:"}},
			{"service without backends", "tcp", "198.18.128.12:80", clientResult{Err: "connect: connection refused"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := runClient(t, node, cgroup, tc.mode, tc.addr)
				got.Local = ""
				if strings.HasPrefix(got.Seen, tc.want.Seen) {
					got.Seen = tc.want.Seen
				}
				if tc.want.Err != "" && strings.HasSuffix(got.Err, tc.want.Err) {
					got.Err = tc.want.Err
				}
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Errorf("client (-want +got):\n%s", d)
				}
			})
		}
		rev, err := maps.NewSockRevNAT(dp.objs.Maps[maps.NameSockRevNAT]).List()
		must(t, err)
		if len(rev) == 0 {
			t.Error("no socket translations recorded")
		}
	})

	t.Run("pods in the cgroup are left to from_container", func(t *testing.T) {
		got := runClient(t, pod1, cgroup, "tcp", "198.18.128.10:80")
		if got.Err != "" || got.Remote != "198.18.128.10:80" || !strings.HasPrefix(got.Seen, "198.19.1.10:") {
			t.Fatalf("client in the pod: %+v", got)
		}
		// from_container translated this connection: the socket
		// load balancer did not
		lp, err := netip.ParseAddrPort(got.Local)
		must(t, err)
		key := maps.Tuple{SAddr: maps.IPv4From(lp.Addr()), DAddr: maps.IPv4From(netip.MustParseAddr("198.18.128.10")),
			SPort: maps.PortFrom(lp.Port()), DPort: maps.PortFrom(80), Proto: maps.ProtoTCP, Dir: maps.DirCTService}
		_, ct, _ := dp.Maps()
		if _, ok, err := ct.Lookup(key); err != nil || !ok {
			t.Errorf("no CT entry %s of from_container (err %v)", key, err)
		}
	})

	t.Run("node processes outside the cgroup are not touched", func(t *testing.T) {
		got := runClient(t, node, "", "tcp", "198.18.128.10:80")
		if !strings.HasSuffix(got.Err, "network is unreachable") {
			t.Errorf("client outside the cgroup: %+v, want the VIP unreachable (the node has no route to it)", got)
		}
	})

	t.Run("restart updates the links in place", func(t *testing.T) {
		ids := func() []uint64 {
			var out []uint64
			for _, sp := range sockProgs {
				pins, err := os.ReadDir(filepath.Join(opts.BPFFSDir, "links"))
				must(t, err)
				found := false
				for _, p := range pins {
					found = found || p.Name() == sockPinName(sp.name)
				}
				if !found {
					t.Fatalf("link of %s not pinned", sp.name)
				}
				l, err := loadPinnedLinkInfo(filepath.Join(opts.BPFFSDir, "links", sockPinName(sp.name)))
				must(t, err)
				out = append(out, l)
			}
			return out
		}
		before := ids()
		start(opts)
		if d := cmp.Diff(before, ids()); d != "" {
			t.Errorf("links recreated instead of updated (-before +after):\n%s", d)
		}
		if got := runClient(t, node, cgroup, "tcp", "198.18.128.10:80"); got.Err != "" {
			t.Errorf("after restart: %+v", got)
		}
	})

	t.Run("turned off", func(t *testing.T) {
		off := opts
		off.SocketLBCgroup = ""
		start(off)
		for _, sp := range sockProgs {
			if _, err := os.Stat(filepath.Join(opts.BPFFSDir, "links", sockPinName(sp.name))); !os.IsNotExist(err) {
				t.Errorf("link of %s still pinned: %v", sp.name, err)
			}
		}
		got := runClient(t, node, cgroup, "tcp", "198.18.128.10:80")
		if !strings.HasSuffix(got.Err, "network is unreachable") {
			t.Errorf("client in the cgroup after turning off: %+v, want the VIP unreachable", got)
		}
	})
}

// loadPinnedLinkInfo returns the id of the link pinned at pin.
func loadPinnedLinkInfo(pin string) (uint64, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return 0, err
	}
	return uint64(info.ID), nil
}
