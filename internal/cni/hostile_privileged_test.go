package cni_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/cni"
)

// nodeState is everything a CNI call may change on a node.
type nodeState struct {
	Links     []string          // links in the node namespace
	Allocs    map[string]string // ipam owner -> address
	Endpoints []string          // endpoint manager's attachments
	Files     []string          // endpoint state files
}

func (l *lab) state() nodeState {
	t := l.t
	t.Helper()
	var st nodeState
	if err := l.inNode(func() error {
		links, err := netlinksafe.LinkList()
		if err != nil {
			return err
		}
		for _, link := range links {
			st.Links = append(st.Links, link.Attrs().Name)
		}
		return nil
	}); err != nil {
		t.Fatalf("list node links: %v", err)
	}
	sort.Strings(st.Links)
	st.Allocs = map[string]string{}
	for o, a := range l.alloc.List() {
		st.Allocs[o] = a.String()
	}
	eps, err := l.mgr.ListEndpoints(context.Background())
	if err != nil {
		t.Fatalf("list endpoints: %v", err)
	}
	for _, ep := range eps {
		st.Endpoints = append(st.Endpoints, ep.Key())
	}
	entries, err := os.ReadDir(filepath.Join(l.stateDir, "endpoints"))
	if err != nil {
		t.Fatalf("read endpoint dir: %v", err)
	}
	for _, e := range entries {
		st.Files = append(st.Files, e.Name())
	}
	return st
}

// podHasEth0 says whether the pod namespace holds an eth0.
func podHasEth0(t *testing.T, pod ns.NetNS) bool {
	t.Helper()
	found := false
	if err := pod.Do(func(ns.NetNS) error {
		_, err := netlinksafe.LinkByName("eth0")
		found = err == nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

// execPlugin runs the plugin binary in the node namespace as a runtime that
// does not go through libcni would, and returns its CNI error (nil on
// success) and stdout.
func (l *lab) execPlugin(env map[string]string, stdin []byte) (*types.Error, []byte) {
	t := l.t
	t.Helper()
	var (
		out    []byte
		runErr error
	)
	if err := l.inNode(func() error {
		cmd := exec.Command(filepath.Join(pluginDir, "glia-cni"))
		cmd.Env = []string{"CNI_PATH=" + pluginDir}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stdin = bytes.NewReader(stdin)
		out, runErr = cmd.Output()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if runErr == nil {
		return nil, out
	}
	var ee *exec.ExitError
	if !errors.As(runErr, &ee) {
		t.Fatalf("run plugin: %v", runErr)
	}
	var e types.Error
	if err := json.Unmarshal(out, &e); err != nil {
		t.Fatalf("plugin failed (%v) without a CNI error on stdout: %q, stderr %q", runErr, out, ee.Stderr)
	}
	return &e, out
}

func (l *lab) netConf(extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"glia","type":"glia-cni","socketPath":%q%s}`, l.socket, extra))
}

// TestPrivilegedCNIBadInput sends hostile input to the plugin binary as a
// runtime would (environment and stdin) and checks each gets the spec's
// error code and changes nothing on the node: no link, no allocation, no
// endpoint. A resident pod shows that nothing existing is disturbed either.
func TestPrivilegedCNIBadInput(t *testing.T) {
	l := newLab(t, "198.19.10.0/24")
	resident := newNS(t)
	if _, err := l.add("1.1.0", "resident", resident); err != nil {
		t.Fatal(err)
	}
	pod := newNS(t)
	regular := filepath.Join(t.TempDir(), "regular")
	if err := os.WriteFile(regular, []byte("not a namespace"), 0o600); err != nil {
		t.Fatal(err)
	}
	huge := l.netConf(`,"pad":"` + strings.Repeat("x", 10<<20) + `"`)
	good := l.netConf("")

	tests := []struct {
		name     string
		cmd      string
		id       string
		ifName   string
		netns    string
		stdin    []byte
		wantCode uint
		wantMsg  string
	}{
		{name: "truncated json", stdin: good[:len(good)/2], wantCode: types.ErrDecodingFailure},
		{name: "wrong type mtu", stdin: l.netConf(`,"mtu":"big"`), wantCode: types.ErrDecodingFailure},
		{name: "wrong type socketPath", stdin: []byte(`{"cniVersion":"1.1.0","name":"glia","type":"glia-cni","socketPath":5}`), wantCode: types.ErrDecodingFailure},
		{name: "no socketPath", stdin: []byte(`{"cniVersion":"1.1.0","name":"glia","type":"glia-cni"}`), wantCode: types.ErrInvalidNetworkConfig},
		{name: "10 MB config", stdin: huge, wantCode: types.ErrInvalidNetworkConfig, wantMsg: "larger than"},
		{name: "unknown cniVersion", stdin: []byte(fmt.Sprintf(`{"cniVersion":"9.9.9","name":"glia","type":"glia-cni","socketPath":%q}`, l.socket)), wantCode: types.ErrIncompatibleCNIVersion},
		{name: "garbage cniVersion", stdin: []byte(fmt.Sprintf(`{"cniVersion":"one","name":"glia","type":"glia-cni","socketPath":%q}`, l.socket)), wantCode: types.ErrIncompatibleCNIVersion},
		{name: "ifname 16 chars", ifName: "0123456789abcdef", wantCode: types.ErrInvalidEnvironmentVariables},
		{name: "ifname dotdot", ifName: "..", wantCode: types.ErrInvalidEnvironmentVariables},
		{name: "ifname slash", ifName: "a/b", wantCode: types.ErrInvalidEnvironmentVariables},
		{name: "empty container id", id: "-", wantCode: types.ErrInvalidEnvironmentVariables},
		{name: "malformed container id", id: "../../etc", wantCode: types.ErrInvalidEnvironmentVariables},
		{name: "container id with newline", id: "abc\ndef", wantCode: types.ErrInvalidEnvironmentVariables},
		{name: "netns missing", netns: "/run/netns/glia-does-not-exist", wantCode: types.ErrInvalidNetNS},
		{name: "netns regular file", netns: regular, wantCode: types.ErrInvalidNetNS},
		{name: "netns host", netns: cni.HostNetnsPath, wantCode: types.ErrInvalidNetNS},
		{name: "netns node's own", netns: l.nodeNS.Path(), wantCode: types.ErrInvalidNetNS},
		{name: "netns dotdot", netns: filepath.Dir(pod.Path()) + "/../" + filepath.Base(filepath.Dir(pod.Path())) + "/" + filepath.Base(pod.Path()), wantCode: types.ErrInvalidNetNS},
		{name: "netns relative", netns: "run/netns/x", wantCode: types.ErrInvalidNetNS},
		{name: "check without prevResult", cmd: "CHECK", wantCode: types.ErrInvalidNetworkConfig, wantMsg: "prevResult"},
		{name: "gc without valid attachments", cmd: "GC", wantCode: types.ErrInvalidNetworkConfig},
		{name: "del malformed container id", cmd: "DEL", id: "a b", wantCode: types.ErrInvalidEnvironmentVariables},
		{name: "unknown command", cmd: "EXPLODE", wantCode: types.ErrInvalidEnvironmentVariables},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := l.state()
			env := map[string]string{
				"CNI_COMMAND":     "ADD",
				"CNI_CONTAINERID": "hostile",
				"CNI_NETNS":       pod.Path(),
				"CNI_IFNAME":      "eth0",
				"CNI_ARGS":        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=hostile",
			}
			if tc.cmd != "" {
				env["CNI_COMMAND"] = tc.cmd
			}
			if tc.id == "-" {
				env["CNI_CONTAINERID"] = ""
			} else if tc.id != "" {
				env["CNI_CONTAINERID"] = tc.id
			}
			if tc.ifName != "" {
				env["CNI_IFNAME"] = tc.ifName
			}
			if tc.netns != "" {
				env["CNI_NETNS"] = tc.netns
			}
			stdin := tc.stdin
			if stdin == nil {
				stdin = good
			}
			cerr, out := l.execPlugin(env, stdin)
			if cerr == nil {
				t.Fatalf("plugin succeeded: %s", out)
			}
			if cerr.Code != tc.wantCode || cerr.Msg == "" {
				t.Fatalf("plugin error = %+v, want code %d with a message", cerr, tc.wantCode)
			}
			if tc.wantMsg != "" && !strings.Contains(cerr.Msg+" "+cerr.Details, tc.wantMsg) {
				t.Fatalf("plugin error %+v does not mention %q", cerr, tc.wantMsg)
			}
			if len(out) > 4096 {
				t.Fatalf("error answer is %d bytes", len(out))
			}
			if diff := cmp.Diff(before, l.state()); diff != "" {
				t.Fatalf("refused call changed the node (-before +after):\n%s", diff)
			}
			if podHasEth0(t, pod) {
				t.Fatal("refused call created eth0 in the pod")
			}
		})
	}
	if err := l.check("1.1.0", "resident", resident); err != nil {
		t.Fatalf("resident pod broken after the hostile calls: %v", err)
	}
}

// TestPrivilegedCNIBadInputLibcni sends the same kind of input through
// libcni, as a kubelet or cnitool would: libcni refuses some itself, the
// plugin the rest; either way a CNI error comes back and nothing changes.
func TestPrivilegedCNIBadInputLibcni(t *testing.T) {
	l := newLab(t, "198.19.11.0/24")
	pod := newNS(t)
	regular := filepath.Join(t.TempDir(), "regular")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := func(v, extra string) *libcni.NetworkConfigList {
		raw := fmt.Sprintf(`{"cniVersion":%q,"name":"glia","plugins":[{"type":"glia-cni","socketPath":%q%s}]}`, v, l.socket, extra)
		cl, err := libcni.ConfListFromBytes([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	tests := []struct {
		name     string
		conf     *libcni.NetworkConfigList
		rt       libcni.RuntimeConf
		wantCode uint
	}{
		{"ifname 16 chars", conf("1.1.0", ""), libcni.RuntimeConf{ContainerID: "x", NetNS: pod.Path(), IfName: "0123456789abcdef"}, types.ErrInvalidEnvironmentVariables},
		{"ifname dotdot", conf("1.1.0", ""), libcni.RuntimeConf{ContainerID: "x", NetNS: pod.Path(), IfName: ".."}, types.ErrInvalidEnvironmentVariables},
		{"empty container id", conf("1.1.0", ""), libcni.RuntimeConf{ContainerID: "", NetNS: pod.Path(), IfName: "eth0"}, types.ErrUnknownContainer},
		{"malformed container id", conf("1.1.0", ""), libcni.RuntimeConf{ContainerID: "../x", NetNS: pod.Path(), IfName: "eth0"}, types.ErrInvalidEnvironmentVariables},
		{"netns missing", conf("1.1.0", ""), libcni.RuntimeConf{ContainerID: "x", NetNS: "/run/netns/glia-nope", IfName: "eth0"}, types.ErrInvalidNetNS},
		{"netns regular file", conf("1.1.0", ""), libcni.RuntimeConf{ContainerID: "x", NetNS: regular, IfName: "eth0"}, types.ErrInvalidNetNS},
		{"netns host", conf("1.1.0", ""), libcni.RuntimeConf{ContainerID: "x", NetNS: cni.HostNetnsPath, IfName: "eth0"}, types.ErrInvalidNetNS},
		{"netns dotdot", conf("1.1.0", ""), libcni.RuntimeConf{ContainerID: "x", NetNS: "/run/netns/../netns/x", IfName: "eth0"}, types.ErrInvalidNetNS},
		{"wrong field type", conf("1.1.0", `,"mtu":"big"`), libcni.RuntimeConf{ContainerID: "x", NetNS: pod.Path(), IfName: "eth0"}, types.ErrDecodingFailure},
		{"10 MB config", conf("1.1.0", `,"pad":"`+strings.Repeat("x", 10<<20)+`"`), libcni.RuntimeConf{ContainerID: "x", NetNS: pod.Path(), IfName: "eth0"}, types.ErrInvalidNetworkConfig},
		{"unknown cniVersion", conf("9.9.9", ""), libcni.RuntimeConf{ContainerID: "x", NetNS: pod.Path(), IfName: "eth0"}, types.ErrIncompatibleCNIVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := l.state()
			err := l.inNode(func() error {
				_, err := l.cni.AddNetworkList(context.Background(), tc.conf, &tc.rt)
				return err
			})
			if cniCode(err) != tc.wantCode {
				t.Fatalf("ADD = %v, want CNI error code %d", err, tc.wantCode)
			}
			if diff := cmp.Diff(before, l.state()); diff != "" {
				t.Fatalf("refused ADD changed the node (-before +after):\n%s", diff)
			}
			if podHasEth0(t, pod) {
				t.Fatal("refused ADD created eth0 in the pod")
			}
		})
	}

	t.Run("check without prevResult", func(t *testing.T) {
		// Nothing was added, so libcni has no cached result to send.
		err := l.check("1.1.0", "never-added", pod)
		if cniCode(err) != types.ErrInvalidNetworkConfig {
			t.Fatalf("CHECK without prevResult = %v, want code %d", err, types.ErrInvalidNetworkConfig)
		}
	})
}

// TestPrivilegedCNIDelTolerant: DEL of an unknown container, of a pod whose
// namespace is gone, twice, and while the agent is down all succeed; what
// the agent missed is cleaned when it returns.
func TestPrivilegedCNIDelTolerant(t *testing.T) {
	l := newLab(t, "198.19.12.0/24")
	empty := l.state()

	t.Run("unknown container", func(t *testing.T) {
		if err := l.del("1.1.0", "never-added", newNS(t)); err != nil {
			t.Fatalf("DEL unknown: %v", err)
		}
		if diff := cmp.Diff(empty, l.state()); diff != "" {
			t.Fatalf("DEL of an unknown container changed the node (-before +after):\n%s", diff)
		}
	})

	// gonePod adds a pod and then destroys its namespace.
	gonePod := func(t *testing.T, id string) string {
		t.Helper()
		pod, err := testutils.NewNS()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.add("1.1.0", id, pod); err != nil {
			t.Fatal(err)
		}
		path := pod.Path()
		_ = pod.Close()
		if err := testutils.UnmountNS(pod); err != nil {
			t.Fatal(err)
		}
		return path
	}
	delGone := func(id, path string) error {
		rt := &libcni.RuntimeConf{ContainerID: id, NetNS: path, IfName: "eth0"}
		return l.inNode(func() error { return l.cni.DelNetworkList(context.Background(), l.confList("1.1.0"), rt) })
	}

	t.Run("namespace gone", func(t *testing.T) {
		path := gonePod(t, "gone")
		for i := 0; i < 2; i++ {
			if err := delGone("gone", path); err != nil {
				t.Fatalf("DEL %d of a pod whose namespace is gone: %v", i+1, err)
			}
		}
		if diff := cmp.Diff(empty, l.state()); diff != "" {
			t.Fatalf("after DEL (-want +got):\n%s", diff)
		}
	})

	t.Run("namespace gone and agent down", func(t *testing.T) {
		path := gonePod(t, "gonedown")
		l.stopAgent()
		if err := delGone("gonedown", path); err != nil {
			t.Fatalf("DEL with agent down: %v", err)
		}
		l.startAgent()
		if diff := cmp.Diff(empty, l.state()); diff != "" {
			t.Fatalf("after the agent returned (-want +got):\n%s", diff)
		}
	})
}

// TestPrivilegedCNICheckDetects: CHECK passes after ADD and fails once any
// part of the pod's network is gone.
func TestPrivilegedCNICheckDetects(t *testing.T) {
	l := newLab(t, "198.19.13.0/24")
	gwNet := &netlink.Route{Dst: mustCIDR("169.254.1.1/32")}
	tests := []struct {
		name   string
		inPod  bool
		break_ func(att api.Attachment) error
	}{
		{"address removed", true, func(api.Attachment) error {
			link, err := netlinksafe.LinkByName("eth0")
			if err != nil {
				return err
			}
			addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if err := netlink.AddrDel(link, &a); err != nil {
					return err
				}
			}
			return nil
		}},
		{"default route removed", true, func(api.Attachment) error {
			return netlink.RouteDel(&netlink.Route{Dst: mustCIDR("0.0.0.0/0"), Gw: netip.MustParseAddr("169.254.1.1").AsSlice()})
		}},
		{"gateway route removed", true, func(api.Attachment) error {
			link, err := netlinksafe.LinkByName("eth0")
			if err != nil {
				return err
			}
			r := *gwNet
			r.LinkIndex = link.Attrs().Index
			r.Scope = netlink.SCOPE_LINK
			return netlink.RouteDel(&r)
		}},
		{"gateway neighbour removed", true, func(api.Attachment) error {
			link, err := netlinksafe.LinkByName("eth0")
			if err != nil {
				return err
			}
			return netlink.NeighDel(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, IP: netip.MustParseAddr("169.254.1.1").AsSlice()})
		}},
		{"host veth down", false, func(a api.Attachment) error {
			link, err := netlinksafe.LinkByName(api.HostIfName(a))
			if err != nil {
				return err
			}
			return netlink.LinkSetDown(link)
		}},
		{"veth removed", false, func(a api.Attachment) error {
			link, err := netlinksafe.LinkByName(api.HostIfName(a))
			if err != nil {
				return err
			}
			return netlink.LinkDel(link)
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := newNS(t)
			id := fmt.Sprintf("check%d", i)
			att := api.Attachment{ContainerID: id, IfName: "eth0"}
			if _, err := l.add("1.1.0", id, pod); err != nil {
				t.Fatal(err)
			}
			if err := l.check("1.1.0", id, pod); err != nil {
				t.Fatalf("CHECK after ADD: %v", err)
			}
			var err error
			if tc.inPod {
				err = pod.Do(func(ns.NetNS) error { return tc.break_(att) })
			} else {
				err = l.inNode(func() error { return tc.break_(att) })
			}
			if err != nil {
				t.Fatalf("break the pod: %v", err)
			}
			if err := l.check("1.1.0", id, pod); err == nil {
				t.Fatal("CHECK passed on a broken pod")
			} else if cniCode(err) == 0 {
				t.Fatalf("CHECK failed without a CNI error: %v", err)
			}
			if err := l.del("1.1.0", id, pod); err != nil {
				t.Fatalf("DEL of a broken pod: %v", err)
			}
			if _, ok := l.alloc.Lookup(att.Key()); ok {
				t.Fatal("DEL of a broken pod kept its address")
			}
		})
	}
}

func mustCIDR(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// killer wraps the agent's backend and "kills" the agent (closes its server
// and every connection, as SIGKILL would) at one point of an ADD.
type killer struct {
	api.Backend
	at   string
	kill func()
}

var errKilled = errors.New("agent killed")

func (k *killer) Allocate(ctx context.Context, req api.AllocateRequest) (api.Allocation, error) {
	a, err := k.Backend.Allocate(ctx, req)
	if k.at == "after allocate" {
		k.kill()
		return api.Allocation{}, errKilled
	}
	return a, err
}

func (k *killer) UpsertEndpoint(ctx context.Context, ep api.Endpoint) error {
	if k.at == "before upsert" {
		k.kill()
		return errKilled
	}
	err := k.Backend.UpsertEndpoint(ctx, ep)
	if k.at == "after upsert" {
		k.kill()
		return errKilled
	}
	return err
}

// TestPrivilegedCNIAgentKilledDuringAdd kills the agent at three points of
// an ADD; once the runtime's DEL has run (with the agent back, or while it
// is still down and the agent then collects what is stale) no address, veth
// or endpoint is left.
func TestPrivilegedCNIAgentKilledDuringAdd(t *testing.T) {
	requireRoot(t)
	for _, at := range []string{"after allocate", "before upsert", "after upsert"} {
		for _, delWhileDown := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/del while down=%v", at, delWhileDown), func(t *testing.T) {
				l := newLab(t, "198.19.14.0/24")
				l.staleGrace = 1 // nanosecond: every allocation is old enough to collect
				empty := l.state()
				l.stopAgent()
				l.wrap = func(b api.Backend, kill func()) api.Backend {
					return &killer{Backend: b, at: at, kill: kill}
				}
				l.startAgent()
				pod := newNS(t)
				if _, err := l.add("1.1.0", "victim", pod); err == nil {
					t.Fatal("ADD succeeded although the agent died")
				} else if cniCode(err) == 0 {
					t.Fatalf("ADD failed without a CNI error: %v", err)
				}
				l.stopAgent()
				l.wrap = nil
				if delWhileDown {
					if err := l.del("1.1.0", "victim", pod); err != nil {
						t.Fatalf("DEL with the agent down: %v", err)
					}
					l.startAgent()
					if err := l.inNode(func() error {
						_, err := l.mgr.CollectStale(context.Background())
						return err
					}); err != nil {
						t.Fatalf("CollectStale: %v", err)
					}
				} else {
					l.startAgent()
					// The dead agent's allocation survived it and DEL
					// frees it; an endpoint it had recorded is an
					// orphan (the plugin removed the veth) that the
					// restore already released.
					want := 1
					if at == "after upsert" {
						want = 0
					}
					if got := l.alloc.List(); len(got) != want {
						t.Fatalf("allocations after the restart = %v, want %d", got, want)
					}
					if err := l.del("1.1.0", "victim", pod); err != nil {
						t.Fatalf("DEL after the agent returned: %v", err)
					}
				}
				if diff := cmp.Diff(empty, l.state()); diff != "" {
					t.Fatalf("left behind (-want +got):\n%s", diff)
				}
				if podHasEth0(t, pod) {
					t.Fatal("pod eth0 left behind")
				}
				// The node still works.
				if _, err := l.add("1.1.0", "after", newNS(t)); err != nil {
					t.Fatalf("ADD after recovery: %v", err)
				}
			})
		}
	}
}

// TestPrivilegedCNIExhaustion: a /28 offers 13 pod addresses; 20 concurrent
// ADDs give 13 unique ones and 7 clean errors that leave nothing behind.
func TestPrivilegedCNIExhaustion(t *testing.T) {
	l := newLab(t, "198.19.15.0/28")
	const n = 20
	pods := make([]ns.NetNS, n)
	for i := range pods {
		pods[i] = newNS(t)
	}
	type outcome struct {
		ip  string
		err error
	}
	results := make([]outcome, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := l.add("1.1.0", fmt.Sprintf("ex%d", i), pods[i])
			if err != nil {
				results[i].err = err
				return
			}
			cur, err := current.NewResultFromResult(res)
			if err != nil || len(cur.IPs) != 1 {
				results[i].err = fmt.Errorf("bad result %v: %v", res, err)
				return
			}
			results[i].ip = cur.IPs[0].Address.IP.String()
		}()
	}
	wg.Wait()

	seen := map[string]int{}
	failed := 0
	for i, r := range results {
		if r.err != nil {
			failed++
			var e *types.Error
			if !errors.As(r.err, &e) || !strings.Contains(e.Msg, "no free address") {
				t.Errorf("ADD %d failed with %v, want a CNI error naming the exhaustion", i, r.err)
			}
			if podHasEth0(t, pods[i]) {
				t.Errorf("failed ADD %d left eth0 in its pod", i)
			}
			continue
		}
		if prev, dup := seen[r.ip]; dup {
			t.Errorf("%s handed to pods %d and %d", r.ip, prev, i)
		}
		seen[r.ip] = i
		if !l.cidr.Contains(netip.MustParseAddr(r.ip)) {
			t.Errorf("pod %d got %s outside %s", i, r.ip, l.cidr)
		}
	}
	if size := l.alloc.Size(); len(seen) != size || failed != n-size {
		t.Fatalf("%d ADDs succeeded and %d failed, want %d and %d", len(seen), failed, size, n-size)
	}
	st := l.state()
	if len(st.Allocs) != len(seen) || len(st.Endpoints) != len(seen) || len(st.Files) != len(seen) {
		t.Fatalf("after exhaustion: %d allocations, %d endpoints, %d files; want %d each", len(st.Allocs), len(st.Endpoints), len(st.Files), len(seen))
	}
	if got := len(st.Links) - 1; got != len(seen) { // lo
		t.Fatalf("%d host veths, want %d: %v", got, len(seen), st.Links)
	}
	if err := l.status(); cniCode(err) != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS on a full node = %v, want code %d", err, types.ErrPluginNotAvailable)
	}
	// Freeing one address lets the next pod start.
	var victim, waiting int = -1, -1
	for i, r := range results {
		if r.err == nil && victim < 0 {
			victim = i
		}
		if r.err != nil && waiting < 0 {
			waiting = i
		}
	}
	if err := l.del("1.1.0", fmt.Sprintf("ex%d", victim), pods[victim]); err != nil {
		t.Fatal(err)
	}
	if _, err := l.add("1.1.0", fmt.Sprintf("ex%d", waiting), pods[waiting]); err != nil {
		t.Fatalf("ADD after a DEL on a full node: %v", err)
	}
}

// TestPrivilegedCNIConcurrentAddDel interleaves 50 ADDs and 50 DELs through
// the plugin binary on a /27 (29 addresses, so addresses are reused): no
// address is ever held by two live pods, and at the end allocations,
// endpoints and host veths are exactly the live pods'.
func TestPrivilegedCNIConcurrentAddDel(t *testing.T) {
	l := newLab(t, "198.19.16.0/27")
	const (
		pods    = 50
		deleted = 35 // pods 0..34 are deleted again, 0..14 twice
		twice   = 15
		workers = 6
	)
	nss := make([]ns.NetNS, pods)
	for i := range nss {
		nss[i] = newNS(t)
	}
	var (
		mu   sync.Mutex
		live = map[string]int{} // address -> pod holding it
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				id := fmt.Sprintf("cc%d", i)
				res, err := l.add("1.1.0", id, nss[i])
				if err != nil {
					fail(fmt.Errorf("ADD %s: %w", id, err))
					continue
				}
				cur, err := current.NewResultFromResult(res)
				if err != nil || len(cur.IPs) != 1 {
					fail(fmt.Errorf("ADD %s result %v: %v", id, res, err))
					continue
				}
				ip := cur.IPs[0].Address.IP.String()
				mu.Lock()
				if other, dup := live[ip]; dup {
					errs = append(errs, fmt.Errorf("%s handed to cc%d while cc%d holds it", ip, i, other))
				}
				live[ip] = i
				mu.Unlock()
				if i >= deleted {
					continue
				}
				// Forget the address before DEL can free it.
				mu.Lock()
				delete(live, ip)
				mu.Unlock()
				for n := 0; n < 1+boolInt(i < twice); n++ {
					if err := l.del("1.1.0", id, nss[i]); err != nil {
						fail(fmt.Errorf("DEL %d of %s: %w", n+1, id, err))
					}
				}
			}
		}()
	}
	// Interleave: deleted and kept pods alternate in the queue.
	order := make([]int, 0, pods)
	for k := 0; k < pods; k++ {
		if k%2 == 0 && k/2 < deleted {
			order = append(order, k/2)
		} else if k%2 == 1 && deleted+k/2 < pods {
			order = append(order, deleted+k/2)
		}
	}
	for i := 0; len(order) < pods; i++ {
		if !contains(order, i) {
			order = append(order, i)
		}
	}
	for _, i := range order {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	st := l.state()
	wantAllocs := map[string]string{}
	var wantEPs, wantLinks []string
	for ip, i := range live {
		a := api.Attachment{ContainerID: fmt.Sprintf("cc%d", i), IfName: "eth0"}
		wantAllocs[a.Key()] = ip
		wantEPs = append(wantEPs, a.Key())
		wantLinks = append(wantLinks, api.HostIfName(a))
	}
	wantLinks = append(wantLinks, "lo")
	sort.Strings(wantEPs)
	sort.Strings(wantLinks)
	if len(live) != pods-deleted {
		t.Fatalf("%d live pods, want %d", len(live), pods-deleted)
	}
	if diff := cmp.Diff(wantAllocs, st.Allocs); diff != "" {
		t.Errorf("allocations (-live pods +ipam):\n%s", diff)
	}
	if diff := cmp.Diff(wantEPs, st.Endpoints); diff != "" {
		t.Errorf("endpoints (-live pods +manager):\n%s", diff)
	}
	if diff := cmp.Diff(wantLinks, st.Links); diff != "" {
		t.Errorf("node links (-live pods +node):\n%s", diff)
	}
	for ip, i := range live {
		v, err := inspectPod(t, nss[i])
		if err != nil || len(v.Addrs) != 1 || v.Addrs[0] != ip+"/32" {
			t.Errorf("pod cc%d: %+v, %v; want %s/32", i, v, err, ip)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
