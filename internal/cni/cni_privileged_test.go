package cni_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/endpoint"
	"glia.dev/glia/internal/ipam"
	"glia.dev/glia/internal/state"
)

var pluginDir string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "glia-cni-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "glia-cni"), "glia.dev/glia/cmd/glia-cni").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build glia-cni: %v\n%s", err, out)
				return 1
			}
			pluginDir = dir
		}
		return m.Run()
	}()
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

func testLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// recordingDP is a datapath that remembers what it was told.
type recordingDP struct {
	mu         sync.Mutex
	eps        map[api.Attachment]api.Endpoint
	failUpsert bool
}

func (d *recordingDP) Program(_ context.Context, sep *state.Endpoint) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failUpsert {
		return errors.New("injected datapath failure")
	}
	ep := endpoint.ToWire(sep)
	d.eps[ep.Attachment] = ep
	return nil
}

func (d *recordingDP) Remove(_ context.Context, a state.Attachment) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.eps, api.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	return nil
}

func (d *recordingDP) Restored(eps []*state.Endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.eps = map[api.Attachment]api.Endpoint{}
	for _, sep := range eps {
		ep := endpoint.ToWire(sep)
		d.eps[ep.Attachment] = ep
	}
}

func (d *recordingDP) get(a api.Attachment) (api.Endpoint, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep, ok := d.eps[a]
	return ep, ok
}

func (d *recordingDP) setFail(v bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failUpsert = v
}

// lab is a node namespace running an agent API server, and a CNI runtime.
type lab struct {
	t        *testing.T
	nodeNS   ns.NetNS
	stateDir string
	socket   string
	cidr     netip.Prefix
	alloc    *ipam.Allocator
	mgr      *endpoint.Manager
	dp       *recordingDP
	srv      interface{ Close() error }
	cni      *libcni.CNIConfig
	// wrap, when set, wraps the manager before it is served (fault
	// injection); kill closes that server and all its connections, as if
	// the agent died. staleGrace is the manager's StaleGrace.
	wrap       func(b api.Backend, kill func()) api.Backend
	staleGrace time.Duration
}

func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

func newLab(t *testing.T, cidr string) *lab {
	t.Helper()
	requireRoot(t)
	l := &lab{
		t:        t,
		nodeNS:   newNS(t),
		stateDir: t.TempDir(),
		socket:   filepath.Join(t.TempDir(), "run", "glia.sock"),
		cidr:     netip.MustParsePrefix(cidr),
		// An explicit exec: libcni creates its default lazily, which races
		// when the first calls are concurrent.
		cni: libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, t.TempDir(),
			&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}),
	}
	l.startAgent()
	t.Cleanup(l.stopAgent)
	return l
}

// startAgent builds the allocator and manager from the state dir, restores
// inside the node namespace and serves the API.
func (l *lab) startAgent() {
	t := l.t
	t.Helper()
	var err error
	l.alloc, err = ipam.New(testLog(), filepath.Join(l.stateDir, "ipam.json"), l.cidr)
	if err != nil {
		t.Fatal(err)
	}
	l.dp = &recordingDP{eps: map[api.Attachment]api.Endpoint{}}
	l.mgr, err = endpoint.NewManager(testLog(), endpoint.Config{StateDir: l.stateDir, PodCIDR: l.cidr, StaleGrace: l.staleGrace}, l.alloc, l.dp)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.nodeNS.Do(func(ns.NetNS) error { return l.mgr.Restore(context.Background()) }); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	ln, err := api.Listen(l.socket, api.WithLogger(testLog()))
	if err != nil {
		t.Fatal(err)
	}
	var (
		backend api.Backend = l.mgr
		srv     *http.Server
	)
	if l.wrap != nil {
		// Handlers run after Serve starts, so after srv is set.
		backend = l.wrap(backend, func() { _ = srv.Close(); _ = ln.Close() })
	}
	srv = api.NewServer(api.NewHandler(testLog(), backend, nil))
	go func() { _ = srv.Serve(ln) }()
	// Closing the listener too covers a stop that comes before Serve has
	// taken the listener over: the socket must be gone when stopAgent
	// returns.
	l.srv = closers{srv, ln}
}

type closers []interface{ Close() error }

func (c closers) Close() error {
	var errs []error
	for _, x := range c {
		errs = append(errs, x.Close())
	}
	return errors.Join(errs...)
}

func (l *lab) stopAgent() {
	if l.srv != nil {
		_ = l.srv.Close()
		l.srv = nil
	}
}

func (l *lab) confList(cniVersion string) *libcni.NetworkConfigList {
	l.t.Helper()
	raw := fmt.Sprintf(`{"cniVersion":%q,"name":"glia","plugins":[{"type":"glia-cni","socketPath":%q}]}`, cniVersion, l.socket)
	cl, err := libcni.ConfListFromBytes([]byte(raw))
	if err != nil {
		l.t.Fatal(err)
	}
	return cl
}

func rt(id string, pod ns.NetNS) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       pod.Path(),
		IfName:      "eth0",
		Args:        [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "pod-" + id}, {"K8S_POD_UID", "u1"}},
	}
}

// inNode runs f in the node namespace, as a runtime there would.
func (l *lab) inNode(f func() error) error {
	return l.nodeNS.Do(func(ns.NetNS) error { return f() })
}

func (l *lab) add(v, id string, pod ns.NetNS) (types.Result, error) {
	var res types.Result
	err := l.inNode(func() error {
		var err error
		res, err = l.cni.AddNetworkList(context.Background(), l.confList(v), rt(id, pod))
		return err
	})
	return res, err
}

func (l *lab) del(v, id string, pod ns.NetNS) error {
	return l.inNode(func() error { return l.cni.DelNetworkList(context.Background(), l.confList(v), rt(id, pod)) })
}

func (l *lab) check(v, id string, pod ns.NetNS) error {
	return l.inNode(func() error { return l.cni.CheckNetworkList(context.Background(), l.confList(v), rt(id, pod)) })
}

func (l *lab) status() error {
	return l.inNode(func() error { return l.cni.GetStatusNetworkList(context.Background(), l.confList("1.1.0")) })
}

func (l *lab) hostLink(name string) (netlink.Link, error) {
	var link netlink.Link
	err := l.inNode(func() error {
		var err error
		link, err = netlinksafe.LinkByName(name)
		return err
	})
	return link, err
}

type podView struct {
	Addrs   []string
	Routes  []string
	GwNeigh string
	LinkUp  bool
}

// inspectPod reads eth0's addresses, routes and the gateway's neighbour entry.
func inspectPod(t *testing.T, pod ns.NetNS) (podView, error) {
	t.Helper()
	var v podView
	err := pod.Do(func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		v.LinkUp = link.Attrs().Flags&net.FlagUp != 0
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			v.Addrs = append(v.Addrs, a.IPNet.String())
		}
		routes, err := netlinksafe.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			dst := "default"
			if r.Dst != nil && !(r.Dst.IP.IsUnspecified() && r.Dst.Mask != nil && maskLen(r.Dst) == 0) {
				dst = r.Dst.String()
			}
			s := dst
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			if r.Scope == netlink.SCOPE_LINK {
				s += " scope link"
			}
			v.Routes = append(v.Routes, s)
		}
		neighs, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			if n.IP.String() == "169.254.1.1" && n.State&netlink.NUD_PERMANENT != 0 {
				v.GwNeigh = n.HardwareAddr.String()
			}
		}
		return nil
	})
	return v, err
}

func maskLen(n *net.IPNet) int {
	ones, _ := n.Mask.Size()
	return ones
}

func TestPrivilegedCNILifecycle(t *testing.T) {
	requireRoot(t)
	for i, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			l := newLab(t, "198.19.1.0/24")
			pod := newNS(t)
			id := fmt.Sprintf("ctr%d", i)
			att := api.Attachment{ContainerID: id, IfName: "eth0"}

			res, err := l.add(v, id, pod)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Errorf("result version %s, want %s", res.Version(), v)
			}
			cur, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			if len(cur.IPs) != 1 || cur.IPs[0].Address.String() != "198.19.1.2/32" || cur.IPs[0].Gateway.String() != "169.254.1.1" {
				t.Fatalf("result IPs = %v", cur.IPs)
			}
			if len(cur.Interfaces) != 2 || cur.Interfaces[1].Name != "eth0" || cur.Interfaces[1].Sandbox != pod.Path() ||
				cur.Interfaces[0].Name != api.HostIfName(att) {
				t.Fatalf("result interfaces = %v", cur.Interfaces)
			}

			host, err := l.hostLink(api.HostIfName(att))
			if err != nil {
				t.Fatalf("host veth: %v", err)
			}
			if host.Attrs().Flags&net.FlagUp == 0 {
				t.Error("host veth is down")
			}
			view, err := inspectPod(t, pod)
			if err != nil {
				t.Fatal(err)
			}
			want := podView{
				Addrs:   []string{"198.19.1.2/32"},
				Routes:  []string{"default via 169.254.1.1", "169.254.1.1/32 scope link"},
				GwNeigh: host.Attrs().HardwareAddr.String(),
				LinkUp:  true,
			}
			if diff := cmp.Diff(want, view); diff != "" {
				t.Fatalf("pod network (-want +got):\n%s", diff)
			}
			ep, ok := l.dp.get(att)
			if !ok {
				t.Fatal("datapath has no endpoint")
			}
			wantEP := api.Endpoint{
				Attachment: att, IP: "198.19.1.2", Netns: pod.Path(), HostIfName: host.Attrs().Name,
				HostIfIndex: host.Attrs().Index, HostMAC: host.Attrs().HardwareAddr.String(),
				PodNamespace: "default", PodName: "pod-" + id, Created: ep.Created,
			}
			wantEP.PodMAC = ep.PodMAC
			if diff := cmp.Diff(wantEP, ep); diff != "" || ep.PodMAC == "" {
				t.Fatalf("datapath endpoint (-want +got):\n%s", diff)
			}

			if v != "0.3.1" {
				if err := l.check(v, id, pod); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
				// CHECK notices a missing default route.
				if err := pod.Do(func(ns.NetNS) error {
					_, dflt, _ := net.ParseCIDR("0.0.0.0/0")
					return netlink.RouteDel(&netlink.Route{Dst: dflt, Gw: net.ParseIP("169.254.1.1")})
				}); err != nil {
					t.Fatal(err)
				}
				if err := l.check(v, id, pod); err == nil {
					t.Fatal("CHECK passed without a default route")
				}
			}

			if v == "1.1.0" {
				if err := l.status(); err != nil {
					t.Fatalf("STATUS: %v", err)
				}
			}

			if err := l.del(v, id, pod); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if _, err := l.hostLink(api.HostIfName(att)); err == nil {
				t.Fatal("host veth still exists after DEL")
			}
			if _, err := inspectPod(t, pod); err == nil {
				t.Fatal("pod eth0 still exists after DEL")
			}
			if _, ok := l.dp.get(att); ok {
				t.Fatal("datapath still has the endpoint after DEL")
			}
			if _, ok := l.alloc.Lookup(att.Key()); ok {
				t.Fatal("address still allocated after DEL")
			}
			if err := l.del(v, id, pod); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
		})
	}
}

func TestPrivilegedCNIVersion(t *testing.T) {
	requireRoot(t)
	info, err := libcni.NewCNIConfig([]string{pluginDir}, nil).GetVersionInfo(context.Background(), "glia-cni")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}, info.SupportedVersions()); diff != "" {
		t.Fatalf("versions (-want +got):\n%s", diff)
	}
}

func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestPrivilegedCNIDuplicateAdd(t *testing.T) {
	l := newLab(t, "198.19.2.0/24")
	pod := newNS(t)
	if _, err := l.add("1.1.0", "dup", pod); err != nil {
		t.Fatal(err)
	}
	before, err := inspectPod(t, pod)
	if err != nil {
		t.Fatal(err)
	}
	att := api.Attachment{ContainerID: "dup", IfName: "eth0"}
	epBefore, _ := l.dp.get(att)
	if _, err := l.add("1.1.0", "dup", pod); err == nil {
		t.Fatal("duplicate ADD succeeded")
	}
	after, err := inspectPod(t, pod)
	if err != nil {
		t.Fatalf("original pod interface damaged: %v", err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Fatalf("pod network changed by the duplicate ADD (-before +after):\n%s", diff)
	}
	epAfter, ok := l.dp.get(att)
	if !ok || !cmp.Equal(epBefore, epAfter) {
		t.Fatalf("endpoint changed by the duplicate ADD: %v -> %v", epBefore, epAfter)
	}
	if _, err := l.hostLink(api.HostIfName(att)); err != nil {
		t.Fatalf("host veth gone after the duplicate ADD: %v", err)
	}
	if err := l.check("1.1.0", "dup", pod); err != nil {
		t.Fatalf("CHECK after the duplicate ADD: %v", err)
	}
	if got := l.alloc.List(); len(got) != 1 || got[att.Key()].String() != epBefore.IP {
		t.Fatalf("allocations after the duplicate ADD = %v, want only %s -> %s", got, att.Key(), epBefore.IP)
	}
}

func TestPrivilegedCNIFailureUndoes(t *testing.T) {
	l := newLab(t, "198.19.3.0/24")
	ctx := context.Background()

	t.Run("datapath refuses the endpoint", func(t *testing.T) {
		pod := newNS(t)
		l.dp.setFail(true)
		defer l.dp.setFail(false)
		if _, err := l.add("1.1.0", "dpfail", pod); err == nil {
			t.Fatal("ADD succeeded")
		}
		att := api.Attachment{ContainerID: "dpfail", IfName: "eth0"}
		if _, err := l.hostLink(api.HostIfName(att)); err == nil {
			t.Error("host veth left behind")
		}
		if _, err := inspectPod(t, pod); err == nil {
			t.Error("pod interface left behind")
		}
		if got := l.alloc.List(); len(got) != 0 {
			t.Errorf("allocations left behind: %v", got)
		}
		if eps, _ := l.mgr.ListEndpoints(ctx); len(eps) != 0 {
			t.Errorf("endpoints left behind: %v", eps)
		}
	})

	t.Run("pod already has eth0", func(t *testing.T) {
		pod := newNS(t)
		if err := pod.Do(func(ns.NetNS) error {
			// A veth: dummy links are not in every kernel.
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "other0"})
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.add("1.1.0", "busy", pod); err == nil {
			t.Fatal("ADD succeeded")
		}
		if got := l.alloc.List(); len(got) != 0 {
			t.Errorf("allocations left behind: %v", got)
		}
		if _, err := l.hostLink(api.HostIfName(api.Attachment{ContainerID: "busy", IfName: "eth0"})); err == nil {
			t.Error("host veth left behind")
		}
	})

	t.Run("netns is the node's own", func(t *testing.T) {
		err := l.inNode(func() error {
			_, err := l.cni.AddNetworkList(ctx, l.confList("1.1.0"), &libcni.RuntimeConf{ContainerID: "self", NetNS: l.nodeNS.Path(), IfName: "eth0"})
			return err
		})
		if cniCode(err) != types.ErrInvalidNetNS {
			t.Fatalf("ADD into the node netns = %v, want code %d", err, types.ErrInvalidNetNS)
		}
		if got := l.alloc.List(); len(got) != 0 {
			t.Errorf("refused ADD allocated %v", got)
		}
	})

	t.Run("netns is not a namespace", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "notns")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err := l.inNode(func() error {
			_, err := l.cni.AddNetworkList(ctx, l.confList("1.1.0"), &libcni.RuntimeConf{ContainerID: "file", NetNS: f, IfName: "eth0"})
			return err
		})
		if cniCode(err) != types.ErrInvalidNetNS {
			t.Fatalf("ADD with a regular file as netns = %v", err)
		}
	})
}

func TestPrivilegedCNIGC(t *testing.T) {
	l := newLab(t, "198.19.4.0/24")
	podA, podB := newNS(t), newNS(t)
	for id, pod := range map[string]ns.NetNS{"keep": podA, "stale": podB} {
		if _, err := l.add("1.1.0", id, pod); err != nil {
			t.Fatal(err)
		}
	}
	err := l.inNode(func() error {
		return l.cni.GCNetworkList(context.Background(), l.confList("1.1.0"),
			&libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, ok := l.dp.get(api.Attachment{ContainerID: "keep", IfName: "eth0"}); !ok {
		t.Fatal("GC removed a valid endpoint")
	}
	stale := api.Attachment{ContainerID: "stale", IfName: "eth0"}
	if _, ok := l.dp.get(stale); ok {
		t.Fatal("GC kept the stale endpoint")
	}
	if _, ok := l.alloc.Lookup(stale.Key()); ok {
		t.Fatal("GC kept the stale address")
	}
	if _, err := l.hostLink(api.HostIfName(stale)); err == nil {
		t.Fatal("GC kept the stale host veth")
	}
	keep := api.Attachment{ContainerID: "keep", IfName: "eth0"}
	if got := l.alloc.List(); len(got) != 1 || !got[keep.Key()].IsValid() {
		t.Fatalf("allocations after GC = %v, want exactly %s", got, keep.Key())
	}
	if _, err := l.hostLink(api.HostIfName(keep)); err != nil {
		t.Fatalf("GC removed the valid host veth: %v", err)
	}
}

func TestPrivilegedCNIStatus(t *testing.T) {
	// A /30 has one pod address.
	l := newLab(t, "198.19.5.0/30")
	if err := l.status(); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	pod := newNS(t)
	if _, err := l.add("1.1.0", "only", pod); err != nil {
		t.Fatal(err)
	}
	err := l.status()
	if cniCode(err) != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS when exhausted = %v, want code 50", err)
	}
	var e *types.Error
	if errors.As(err, &e) && !containsFold(e.Msg, "exhaust") {
		t.Fatalf("STATUS message %q does not name the exhaustion", e.Msg)
	}
	l.stopAgent()
	if err := l.status(); cniCode(err) != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS without agent = %v, want code 50", err)
	}
}

func containsFold(s, sub string) bool {
	return len(s) >= len(sub) && (func() bool {
		for i := 0; i+len(sub) <= len(s); i++ {
			if equalFold(s[i:i+len(sub)], sub) {
				return true
			}
		}
		return false
	})()
}

func equalFold(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// TestPrivilegedCNIAgentDown: DEL with no agent removes the veth and
// succeeds; the restarted agent finds the endpoint orphaned and releases it,
// while the live one is kept.
func TestPrivilegedCNIAgentDown(t *testing.T) {
	l := newLab(t, "198.19.6.0/24")
	live, gone := newNS(t), newNS(t)
	if _, err := l.add("1.1.0", "live", live); err != nil {
		t.Fatal(err)
	}
	if _, err := l.add("1.1.0", "gone", gone); err != nil {
		t.Fatal(err)
	}
	l.stopAgent()
	goneAtt := api.Attachment{ContainerID: "gone", IfName: "eth0"}
	if err := l.del("1.1.0", "gone", gone); err != nil {
		t.Fatalf("DEL without agent: %v", err)
	}
	if _, err := l.hostLink(api.HostIfName(goneAtt)); err == nil {
		t.Fatal("DEL without agent left the host veth")
	}
	if _, err := l.add("1.1.0", "new", newNS(t)); cniCode(err) != types.ErrTryAgainLater {
		t.Fatalf("ADD without agent = %v, want code %d", err, types.ErrTryAgainLater)
	}

	l.startAgent()
	eps, err := l.mgr.ListEndpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 || eps[0].ContainerID != "live" {
		t.Fatalf("restored endpoints %v, want only live", eps)
	}
	if _, ok := l.alloc.Lookup(goneAtt.Key()); ok {
		t.Fatal("orphan's address still allocated after restore")
	}
	if err := l.check("1.1.0", "live", live); err != nil {
		t.Fatalf("CHECK of the live pod after restart: %v", err)
	}
}
