package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// Paths of request-response.
const (
	pathPodSame = "pod→pod, same node"
	pathPodFar  = "pod→pod, across nodes"
	pathSvcSame = "pod→Service→pod, same node"
	pathSvcFar  = "pod→Service→pod, across nodes"
)

// Addresses of the veth floor: two namespaces of glia bench's own, joined
// by a veth pair and nothing else (pod range, never routed anywhere).
var (
	floorClient = netip4("198.19.254.1")
	floorServer = netip4("198.19.254.2")
)

func netip4(s string) net.IP { return net.ParseIP(s).To4() }

// vethFloor is two network namespaces joined by a bare veth pair.
type vethFloor struct {
	client, server ns.NetNS
	srv            *servers
}

func newVethFloor() (*vethFloor, error) {
	f := &vethFloor{}
	var err error
	if f.client, err = testutils.NewNS(); err != nil {
		return nil, err
	}
	if f.server, err = testutils.NewNS(); err != nil {
		f.Close()
		return nil, err
	}
	err = f.client.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "bench0", MTU: 1500}, PeerName: "bench1",
			PeerNamespace: netlink.NsFd(int(f.server.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		return upWithAddr("bench0", floorClient)
	})
	if err == nil {
		err = f.server.Do(func(ns.NetNS) error { return upWithAddr("bench1", floorServer) })
	}
	// The kernel attaches a veth's queueing discipline when it sees the
	// carrier come up, in deferred work that a busy machine runs up to a
	// second or more later; until then every packet is dropped.
	if err == nil {
		err = f.client.Do(func(ns.NetNS) error { return waitOperUp("bench0", 10*time.Second) })
	}
	if err == nil {
		err = f.server.Do(func(ns.NetNS) error { return waitOperUp("bench1", 10*time.Second) })
	}
	if err == nil {
		f.srv, err = startServers(f.server.Path(), "veth-floor-server")
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func upWithAddr(name string, ip net.IP) error {
	for _, n := range []string{"lo", name} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			return err
		}
		if n == name {
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(30, 32)}}); err != nil {
				return err
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

// waitOperUp waits until link name in the current namespace is
// operationally up.
func waitOperUp(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not operationally up after %s (state %s)", name, timeout, l.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *vethFloor) Close() error {
	var errs []error
	if f.srv != nil {
		errs = append(errs, f.srv.Close())
	}
	for _, n := range []ns.NetNS{f.client, f.server} {
		if n != nil {
			errs = append(errs, n.Close(), testutils.UnmountNS(n))
		}
	}
	return errors.Join(errs...)
}

// runRequestResponse: per mode a client pod, a server pod on its node and
// one on a second node of the same mode, and a Service in front of each;
// the RR rate (1-byte ping-pong on one connection) and the throughput of
// one stream on each path, modes interleaved; the veth floor likewise.
func runRequestResponse(ctx context.Context, r *runner, rep *Report) error {
	modes := []string{ModeEBPF, ModeLegacy}
	rep.Modes = append(modes, ModeVethFloor)
	specs := []nodeSpec{{ModeEBPF, "a"}, {ModeEBPF, "b"}, {ModeIPTables, "a"}, {ModeIPTables, "b"}}
	nodeMode := map[string]string{ModeEBPF: ModeEBPF, ModeLegacy: ModeIPTables}
	return r.withEnv(ctx, rep, specs, func(e *env) error {
		pods := map[string]string{}
		for _, m := range modes {
			pods["client-"+m] = e.node(nodeMode[m], "a")
			pods["same-"+m] = e.node(nodeMode[m], "a")
			pods["far-"+m] = e.node(nodeMode[m], "b")
		}
		if err := e.addPods(ctx, pods); err != nil {
			return err
		}
		addrs := map[string]map[string]string{}
		for _, m := range modes {
			if err := e.serve("same-"+m, "far-"+m); err != nil {
				return err
			}
			same, err := e.createService(ctx, "rr-same-"+m, []string{e.pods["same-"+m].ip}, allPorts)
			if err != nil {
				return err
			}
			far, err := e.createService(ctx, "rr-far-"+m, []string{e.pods["far-"+m].ip}, allPorts)
			if err != nil {
				return err
			}
			addrs[m] = map[string]string{
				pathPodSame: e.pods["same-"+m].ip, pathPodFar: e.pods["far-"+m].ip,
				pathSvcSame: same, pathSvcFar: far,
			}
		}
		floor, err := newVethFloor()
		if err != nil {
			return fmt.Errorf("veth floor: %w", err)
		}
		defer floor.Close()
		nsOf := map[string]string{ModeVethFloor: floor.client.Path()}
		addrs[ModeVethFloor] = map[string]string{pathPodSame: floorServer.String()}
		for _, m := range modes {
			nsOf[m] = e.pods["client-"+m].nsPath
		}
		for _, m := range modes {
			r.p.status("request-response: waiting until %s carries its Services", m)
			var targets []string
			for _, p := range []string{pathSvcSame, pathSvcFar} {
				targets = append(targets, net.JoinHostPort(addrs[m][p], "80"))
			}
			if _, _, err := r.carriedModes(ctx, e, rep, "request-response", []string{m}, targets, nil, 2*time.Minute); err != nil {
				return err
			}
		}
		all := append(append([]string(nil), modes...), ModeVethFloor)
		for i := range r.opts.Repeats {
			for _, m := range rotate(all, i) {
				for _, path := range []string{pathPodSame, pathPodFar, pathSvcSame, pathSvcFar} {
					host, ok := addrs[m][path]
					if !ok {
						continue
					}
					rrPort, streamPort := portRR, portStream
					if path == pathSvcSame || path == pathSvcFar {
						rrPort, streamPort = int(allPorts[1].port), int(allPorts[2].port)
					}
					r.p.status("request-response rep %d/%d %s %s: RR for %s", i+1, r.opts.Repeats, m, path, r.opts.Duration)
					rate, err := rr(nsOf[m], net.JoinHostPort(host, strconv.Itoa(rrPort)), r.opts.Duration)
					if err != nil {
						return fmt.Errorf("%s %s RR: %w", m, path, err)
					}
					rep.Add("RR rate", "trans/s", path, 0, m, false, rate)
					r.p.status("request-response rep %d/%d %s %s: stream for %s", i+1, r.opts.Repeats, m, path, r.opts.Duration)
					gbps, err := stream(nsOf[m], net.JoinHostPort(host, strconv.Itoa(streamPort)), r.opts.Duration)
					if err != nil {
						return fmt.Errorf("%s %s stream: %w", m, path, err)
					}
					rep.Add("throughput", "Gbit/s", path, 0, m, false, gbps)
				}
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		rep.Note("legacy = legacy host routing, iptables masquerade and kube-proxy (iptables); ebpf = BPF host routing, eBPF masquerade and kube-proxy replacement; veth-floor = two namespaces joined by a bare veth pair, no CNI at all")
		return nil
	})
}
