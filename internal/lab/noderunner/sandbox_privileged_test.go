package noderunner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/lab/podinit"
)

// testPluginName is the CNI plugin type served by the test binary itself
// (see runTestPlugin): a veth eth0 (peer inside the same namespace) with a
// fixed address in the pod's
// namespace, and a record of every call.
const testPluginName = "glia-lab-test-cni"

type testPluginConf struct {
	CNIVersion string `json:"cniVersion"`
	RecordFile string `json:"recordFile"`
	Address    string `json:"address"`
}

func runTestPlugin() int {
	fail := func(err error) int {
		json.NewEncoder(os.Stdout).Encode(map[string]any{"cniVersion": "1.1.0", "code": 100, "msg": err.Error()})
		return 1
	}
	b, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fail(err)
	}
	var conf testPluginConf
	if err := json.Unmarshal(b, &conf); err != nil {
		return fail(err)
	}
	cmd, netnsPath, ifname := os.Getenv("CNI_COMMAND"), os.Getenv("CNI_NETNS"), os.Getenv("CNI_IFNAME")
	if conf.RecordFile != "" {
		f, err := os.OpenFile(conf.RecordFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(f, "%s %s %s %s %s\n", cmd, os.Getenv("CNI_CONTAINERID"), ifname, netnsPath, os.Getenv("CNI_ARGS"))
		f.Close()
	}
	switch cmd {
	case "ADD":
		addr, err := netlink.ParseAddr(conf.Address)
		if err != nil {
			return fail(err)
		}
		err = ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
			// Both ends stay in the pod's namespace: the test plugin
			// never touches the runner's.
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifname}, PeerName: "peer0"}
			if err := netlink.LinkAdd(veth); err != nil {
				return fmt.Errorf("add veth: %w", err)
			}
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(l, addr); err != nil {
				return err
			}
			return netlink.LinkSetUp(l)
		})
		if err != nil {
			return fail(err)
		}
		json.NewEncoder(os.Stdout).Encode(map[string]any{
			"cniVersion": conf.CNIVersion,
			"interfaces": []any{map[string]any{"name": ifname, "sandbox": netnsPath}},
			"ips":        []any{map[string]any{"address": conf.Address, "interface": 0}},
		})
	case "DEL":
		if netnsPath == "" {
			return 0
		}
		err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				return nil
			}
			return netlink.LinkDel(l) // removes the peer too
		})
		if err != nil {
			return fail(err)
		}
	case "CHECK":
		err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
			_, err := netlink.LinkByName(ifname)
			return err
		})
		if err != nil {
			return fail(err)
		}
	case "VERSION":
		fmt.Println(`{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}`)
	default:
		return fail(fmt.Errorf("unsupported command %q", cmd))
	}
	return 0
}

func TestPrivilegedHostSandbox(t *testing.T) {
	requireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	binDir, confDir, stateDir := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.Symlink(self, filepath.Join(binDir, testPluginName)); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(t.TempDir(), "calls")
	conflist := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"glia","plugins":[{"type":%q,"recordFile":%q,"address":"198.19.99.5/24"}]}`, testPluginName, record)
	if err := os.WriteFile(filepath.Join(confDir, "10-glia.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Node = "t" + randHex(t)
	cfg.NodeIP = "198.18.0.11"
	cfg.StateDir = stateDir
	cfg.CNIConfDir = confDir
	cfg.CNIBinDir = binDir
	cfg.SelfExe = self
	cfg.Cgroup = testCgroup(t)
	sb, err := NewHostSandbox(slog.New(slog.NewTextHandler(io.Discard, nil)), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.NetworkReady(); err != nil {
		t.Fatalf("NetworkReady: %v", err)
	}

	uid := "7d3c9a10-" + randHex(t) + "-4e5f-9a0b-c1d2e3f40516"
	st := &PodState{UID: uid, Namespace: "shop", Name: "web-0", SandboxID: newID(), Dir: t.TempDir()}
	t.Cleanup(func() {
		// Whatever happened, leave nothing behind (Teardown is idempotent).
		sb.Signal(st, syscall.SIGKILL)
		if err := sb.Teardown(context.Background(), st); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		removeNetNS(filepath.Join(NetNSDir, PodNetNSName(cfg.Node, uid)))
	})
	if err := sb.Prepare(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(NetNSDir, PodNetNSName(cfg.Node, uid)); st.NetNSPath != want || !strings.HasPrefix(filepath.Base(want), NetNSPrefix) {
		t.Errorf("netns path %q, want %q", st.NetNSPath, want)
	}
	if len(st.PodIPs) != 1 || st.PodIPs[0] != "198.19.99.5" {
		t.Errorf("pod IPs %v, want the CNI result's 198.19.99.5", st.PodIPs)
	}
	if !bytes.Contains(st.CNIResult, []byte("198.19.99.5/24")) {
		t.Errorf("CNI result not kept: %s", st.CNIResult)
	}
	cached := 0
	filepath.WalkDir(filepath.Join(stateDir, "cni-cache"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, st.SandboxID) {
			cached++
		}
		return nil
	})
	if cached == 0 {
		t.Error("libcni did not cache the ADD result under the state dir")
	}
	// The runner's own namespace is untouched: no eth0 address moved here.
	if addrs, _ := net.InterfaceAddrs(); strings.Contains(fmt.Sprint(addrs), "198.19.99.5") {
		t.Fatal("pod address appeared in the runner's namespace")
	}
	if err := sb.Check(t.Context(), st); err != nil {
		t.Errorf("CNI CHECK: %v", err)
	}

	logPath := filepath.Join(stateDir, "shop_web-0_c.log")
	p, err := sb.Start(t.Context(), st, podinit.Options{
		Scratch:  scratchDir(t, st.Dir),
		Hostname: "web-0",
		Argv:     []string{"sh", "-c", "cat /sys/class/net/eth0/operstate; hostname; echo marker; exec sleep 1000"},
	}, []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, ContainerIO{LogPath: logPath, AttachSocket: AttachSocketPath(st.Dir, "c")})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "container output", func() (bool, error) {
		select {
		case <-p.Done():
			b, _ := logText(logPath)
			return false, fmt.Errorf("container exited: %s", b)
		default:
		}
		b, err := logText(logPath)
		return bytes.Contains(b, []byte("marker")), err
	})
	if b, _ := logText(logPath); !strings.Contains(string(b), "web-0\n") || strings.Contains(string(b), "No such file") {
		t.Errorf("container did not see its eth0 and hostname:\n%s", b)
	}
	st.Containers = []ContainerState{{Name: "c", PID: p.PID(), StartTime: p.StartTime()}}
	if _, err := sb.Adopt(st, st.Containers[0]); err != nil {
		t.Errorf("Adopt: %v", err)
	}

	if err := sb.Signal(st, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if err := sb.Teardown(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.NetNSPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod netns still there: %v", err)
	}
	if st.CgroupDir != "" {
		if _, err := os.Stat(st.CgroupDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pod cgroup still there: %v", err)
		}
	}
	// Teardown is idempotent: DEL again without a namespace.
	if err := sb.Teardown(t.Context(), st); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	calls, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(calls)), "\n")
	var verbs []string
	for _, l := range lines {
		verbs = append(verbs, strings.Fields(l)[0])
	}
	if got := strings.Join(verbs, " "); got != "ADD CHECK DEL DEL" {
		t.Errorf("CNI calls %q, want ADD CHECK DEL DEL", got)
	}
	wantArgs := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s", st.SandboxID, uid)
	if f := strings.Fields(lines[0]); len(f) < 5 || f[1] != st.SandboxID || f[2] != "eth0" || f[3] != st.NetNSPath || f[4] != wantArgs {
		t.Errorf("ADD call %q, want container %s eth0 %s %s", lines[0], st.SandboxID, st.NetNSPath, wantArgs)
	}
}
