package bpf

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/state"
)

// dialFromPort connects from a fixed local port with SO_REUSEADDR, as a
// client that runs through its ephemeral ports reuses one whose last
// connection is in TIME-WAIT. timeout bounds a failing connect.
func dialFromPort(n ns.NetNS, port int, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{Port: port},
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				}); err != nil {
					return err
				}
				return serr
			}}
		var err error
		c, err = d.Dial("tcp4", addr)
		return err
	})
	return c, err
}

// tcpState returns the state (as in /proc/net/tcp, "06" is TIME-WAIT) of
// the socket local -> remote in n, or "" when there is none.
func tcpState(t *testing.T, n ns.NetNS, local, remote netip.AddrPort) string {
	t.Helper()
	hexAP := func(ap netip.AddrPort) string {
		a := ap.Addr().As4()
		// /proc/net/tcp prints the address as a little-endian word
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	}
	var state string
	must(t, n.Do(func(ns.NetNS) error {
		b, err := os.ReadFile("/proc/thread-self/net/tcp")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 3 && f[1] == hexAP(local) && f[2] == hexAP(remote) {
				state = f[3]
			}
		}
		return nil
	}))
	return state
}

// A pod connects to a Service, closes the connection (it holds it in
// TIME-WAIT), then connects from the same port to the backend's own
// address. The backend's SYN-ACK must not be rewritten to come from the
// Service: it would hit the TIME-WAIT socket and the connect would stall
// in SYN-SENT.
func TestPrivilegedCTPortReuseAfterServiceFlow(t *testing.T) {
	requirePrivileged(t)
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
	must(t, outside.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName("ext0")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr("198.18.0.254/24")
		return netlink.AddrAdd(l, a)
	}))
	setupPod(t, pod1, "198.19.1.10", lxc1.Attrs().HardwareAddr)
	setupPod(t, pod2, "198.19.1.20", lxc2.Attrs().HardwareAddr)
	echoServer(t, pod2, "198.19.1.20:8080")

	local := datapath.LocalNode{Name: "node1", IP: netip.MustParseAddr("198.18.0.11"), Device: "eth0",
		PodCIDR: netip.MustParsePrefix("198.19.1.0/24"), ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16")}
	opts := testOpts{RoutingMode: "native", KubeProxyReplacement: true, BPFMasquerade: true,
		HostRoutingBPF: true, LBAlgorithm: "random", BPFFSDir: filepath.Join(bpffs, "node1"), MTU: 1500}
	eps := []*state.Endpoint{
		{Attachment: state.Attachment{ContainerID: "c1", IfName: "eth0"}, IP: netip.MustParseAddr("198.19.1.10"), HostIfName: "lxc1", Netns: pod1.Path()},
		{Attachment: state.Attachment{ContainerID: "c2", IfName: "eth0"}, IP: netip.MustParseAddr("198.19.1.20"), HostIfName: "lxc2", Netns: pod2.Path()},
	}
	services := []svcPort{{Namespace: "default", Name: "echo", Protocol: "TCP",
		Frontend: netip.MustParseAddrPort("198.18.128.10:80"),
		Backends: []state.Backend{{Addr: netip.MustParseAddrPort("198.19.1.20:8080"), Ready: true}}}}
	var dp *Datapath
	must(t, node.Do(func(ns.NetNS) error {
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
	t.Cleanup(func() { dp.Close() })
	_, ct, _ := dp.Maps()

	vipAP := netip.MustParseAddrPort("198.18.128.10:80")
	for i, tc := range []struct {
		name string
		age  time.Duration // of the CT entries, after the close
	}{
		{"right after close", 0},
		{"after the closing lifetime", 11 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := 45000 + i
			clientAP := netip.AddrPortFrom(netip.MustParseAddr("198.19.1.10"), uint16(port))

			c, err := dialFromPort(pod1, port, vipAP.String(), 5*time.Second)
			must(t, err)
			(&client{c, bufio.NewReader(c)}).roundTrip(t, "via-vip")
			must(t, c.Close())
			// the close is over once the client holds TIME-WAIT: the
			// server's FIN came back through the datapath
			for deadline := time.Now().Add(5 * time.Second); tcpState(t, pod1, clientAP, vipAP) != "06"; {
				if time.Now().After(deadline) {
					t.Fatalf("client socket %s -> %s never reached TIME-WAIT (state %q)", clientAP, vipAP, tcpState(t, pod1, clientAP, vipAP))
				}
				time.Sleep(10 * time.Millisecond)
			}
			if tc.age > 0 {
				rows, err := ct.List()
				must(t, err)
				var ts unix.Timespec
				must(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
				for _, r := range rows {
					r.Entry.LastSeen = uint64(ts.Nano()) - uint64(tc.age)
					must(t, ct.Update(r.Key, r.Entry))
				}
			}

			// 5 s bounds the failure: a stalled connect never completes
			// while the stale translation is there
			d, err := dialFromPort(pod1, port, "198.19.1.20:8080", 5*time.Second)
			if err != nil {
				rows, _ := ct.List()
				t.Fatalf("direct connection from port %d after the Service flow: %v\nCT: %v", port, err, rows)
			}
			t.Cleanup(func() { d.Close() })
			if got := (&client{d, bufio.NewReader(d)}).roundTrip(t, "direct"); got != clientAP.String() {
				t.Errorf("server saw %s, want %s", got, clientAP)
			}
		})
	}
}
