package cni_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/api"
)

// TestPrivilegedCNITool drives the plugin with cnitool, built from the
// containernetworking/cni module go.mod pins, the way a person trying glia
// would (CNI_PATH, NETCONFPATH, a network name and a namespace), and checks
// it gets the answers libcni gets for the same configuration: the same
// result, CHECK passing and then failing with the same error, STATUS with
// the agent up and down, DEL twice, GC refused without a list.
//
// cnitool caches results under /var/lib/cni (it has no option for another
// directory); the network has a name of its own so nothing else there is
// touched, DEL removes the cache entry, and the directories cnitool made
// for it are removed at the end if they are empty.
func TestPrivilegedCNITool(t *testing.T) {
	for _, dir := range []string{"/var/lib/cni", "/var/lib/cni/results"} {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			t.Cleanup(func() { os.Remove(dir) }) // only if empty; deepest first (cleanups run in reverse)
		}
	}
	l := newLab(t, "198.19.18.0/24")
	toolDir := t.TempDir()
	cnitool := filepath.Join(toolDir, "cnitool")
	if out, err := exec.Command("go", "build", "-o", cnitool, "github.com/containernetworking/cni/cnitool").CombinedOutput(); err != nil {
		t.Fatalf("build cnitool: %v\n%s", err, out)
	}
	netName := fmt.Sprintf("glia-cnitool-test-%d", os.Getpid())
	confDir := t.TempDir()
	raw := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"plugins":[{"type":"glia-cni","socketPath":%q}]}`, netName, l.socket)
	if err := os.WriteFile(filepath.Join(confDir, "10-glia.conflist"), []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	confList, err := libcni.ConfListFromBytes([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}

	toolPod, libPod := newNS(t), newNS(t)
	sum := sha512.Sum512([]byte(toolPod.Path()))
	toolAtt := api.Attachment{ContainerID: fmt.Sprintf("cnitool-%x", sum[:10]), IfName: "eth0"}
	libRT := &libcni.RuntimeConf{ContainerID: "libcni-pod", NetNS: libPod.Path(), IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "pod"}}}
	libAtt := api.Attachment{ContainerID: libRT.ContainerID, IfName: "eth0"}

	// tool runs cnitool in the node namespace.
	tool := func(args ...string) (stdout, stderr string, err error) {
		var o, e bytes.Buffer
		rerr := l.inNode(func() error {
			cmd := exec.Command(cnitool, args...)
			cmd.Env = []string{"CNI_PATH=" + pluginDir, "NETCONFPATH=" + confDir,
				"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod", "PATH=" + os.Getenv("PATH")}
			cmd.Stdout, cmd.Stderr = &o, &e
			return cmd.Run()
		})
		return o.String(), e.String(), rerr
	}
	lib := func(f func(ctx context.Context) error) error {
		return l.inNode(func() error { return f(context.Background()) })
	}
	t.Cleanup(func() {
		// Leave no cache entry under /var/lib/cni, whatever failed.
		_, _, _ = tool("del", netName, toolPod.Path())
	})

	// ADD: the same result, up to the pod-specific values.
	out, stderr, err := tool("add", netName, toolPod.Path())
	if err != nil {
		t.Fatalf("cnitool add: %v\n%s", err, stderr)
	}
	toolRes, err := current.NewResult([]byte(out))
	if err != nil {
		t.Fatalf("cnitool add printed %q: %v", out, err)
	}
	var libRes types.Result
	if err := lib(func(ctx context.Context) error {
		var err error
		libRes, err = l.cni.AddNetworkList(ctx, confList, libRT)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	libCur, err := current.NewResultFromResult(libRes)
	if err != nil {
		t.Fatal(err)
	}
	toolCur, err := current.NewResultFromResult(toolRes)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		res *current.Result
		att api.Attachment
		pod ns.NetNS
	}{{toolCur, toolAtt, toolPod}, {libCur, libAtt, libPod}} {
		ep, err := l.mgr.GetEndpoint(context.Background(), c.att)
		if err != nil {
			t.Fatalf("endpoint of %s: %v", c.att, err)
		}
		if len(c.res.IPs) != 1 || c.res.IPs[0].Address.IP.String() != ep.IP || len(c.res.Interfaces) != 2 ||
			c.res.Interfaces[0].Name != ep.HostIfName || c.res.Interfaces[0].Mac != ep.HostMAC ||
			c.res.Interfaces[1].Mac != ep.PodMAC || c.res.Interfaces[1].Sandbox != c.pod.Path() {
			t.Fatalf("result for %s %+v does not describe its endpoint %+v", c.att, c.res, ep)
		}
	}
	if diff := cmp.Diff(normalize(libCur), normalize(toolCur)); diff != "" {
		t.Fatalf("cnitool and libcni results differ beyond pod-specific values (-libcni +cnitool):\n%s", diff)
	}

	// CHECK passes for both, then fails for both with the same error.
	if _, stderr, err := tool("check", netName, toolPod.Path()); err != nil {
		t.Fatalf("cnitool check: %v\n%s", err, stderr)
	}
	if err := lib(func(ctx context.Context) error { return l.cni.CheckNetworkList(ctx, confList, libRT) }); err != nil {
		t.Fatalf("libcni check: %v", err)
	}
	for _, pod := range []ns.NetNS{toolPod, libPod} {
		if err := pod.Do(func(ns.NetNS) error {
			return netlink.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: net.ParseIP("169.254.1.1")})
		}); err != nil {
			t.Fatal(err)
		}
	}
	libErr := lib(func(ctx context.Context) error { return l.cni.CheckNetworkList(ctx, confList, libRT) })
	if libErr == nil {
		t.Fatal("libcni check passed without a default route")
	}
	_, stderr, err = tool("check", netName, toolPod.Path())
	if err == nil || !strings.Contains(stderr, libErr.Error()) {
		t.Fatalf("cnitool check = %v, stderr %q; want a failure saying %q", err, stderr, libErr)
	}

	// STATUS: ready, then the agent is down (code 50 for both).
	if _, stderr, err := tool("status", netName, toolPod.Path()); err != nil {
		t.Fatalf("cnitool status: %v\n%s", err, stderr)
	}
	l.stopAgent()
	libErr = lib(func(ctx context.Context) error { return l.cni.GetStatusNetworkList(ctx, confList) })
	if cniCode(libErr) != types.ErrPluginNotAvailable {
		t.Fatalf("libcni status with the agent down = %v, want code 50", libErr)
	}
	_, stderr, err = tool("status", netName, toolPod.Path())
	if err == nil || !strings.Contains(stderr, libErr.Error()) {
		t.Fatalf("cnitool status with the agent down = %v, stderr %q; want %q", err, stderr, libErr)
	}
	l.startAgent()

	// DEL, twice, for both; nothing of either pod is left.
	for i := 0; i < 2; i++ {
		if _, stderr, err := tool("del", netName, toolPod.Path()); err != nil {
			t.Fatalf("cnitool del %d: %v\n%s", i+1, err, stderr)
		}
		if err := lib(func(ctx context.Context) error { return l.cni.DelNetworkList(ctx, confList, libRT) }); err != nil {
			t.Fatalf("libcni del %d: %v", i+1, err)
		}
	}
	st := l.state()
	if len(st.Allocs) != 0 || len(st.Endpoints) != 0 || len(st.Files) != 0 || len(st.Links) != 1 {
		t.Fatalf("left after DEL: %+v", st)
	}

	// GC without a list of valid attachments is refused alike.
	libErr = lib(func(ctx context.Context) error { return l.cni.GCNetworkList(ctx, confList, nil) })
	if cniCode(libErr) != types.ErrInvalidNetworkConfig {
		t.Fatalf("libcni gc without attachments = %v, want code %d", libErr, types.ErrInvalidNetworkConfig)
	}
	_, stderr, err = tool("gc", netName, toolPod.Path())
	if err == nil || !strings.Contains(stderr, libErr.Error()) {
		t.Fatalf("cnitool gc = %v, stderr %q; want %q", err, stderr, libErr)
	}
}

// normalize blanks what differs between two pods of one node: addresses,
// MACs, names derived from the container ID and the sandbox path.
func normalize(r *current.Result) string {
	c := *r
	c.Interfaces = nil
	for _, i := range r.Interfaces {
		n := *i
		n.Mac = "MAC"
		if n.Sandbox != "" {
			n.Sandbox = "SANDBOX"
		} else {
			n.Name = "HOST"
		}
		c.Interfaces = append(c.Interfaces, &n)
	}
	c.IPs = nil
	for _, ip := range r.IPs {
		n := *ip
		n.Address = net.IPNet{IP: net.IPv4zero, Mask: ip.Address.Mask}
		c.IPs = append(c.IPs, &n)
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	return string(b)
}
