package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/state"
)

// attachChildEnv makes the test binary, run by
// TestPrivilegedAttachKilledBeforePin, an agent's attach step: "<netns
// path> <bpffs dir> <tcx 0|1>". It loads the objects pinned in the bpffs
// dir, attaches from_container on attachIf's ingress as the agent's
// program reconciler does, finishes the map migration and prints
// "attached=<whether it had to>".
const attachChildEnv = "GLIA_TEST_ATTACH_CHILD"

const attachIf = "glkill0"

func attachChild(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 3 {
		return fmt.Errorf("%s=%q: want <netns> <bpffs dir> <tcx 0|1>", attachChildEnv, spec)
	}
	n, err := ns.GetNS(f[0])
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Do(func(ns.NetNS) error {
		o, err := loadObjects(testLogger(), Config{NodeIP: netip.MustParseAddr(nodeIP), PodCIDR: netip.MustParsePrefix("198.19.1.0/24"),
			ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16"), NodeIfIndex: 1}, f[1])
		if err != nil {
			return err
		}
		defer o.Close()
		d := &Datapath{log: testLogger(), linksDir: filepath.Join(f[1], "links"), tcx: f[2] == "1", objs: o}
		if err := os.MkdirAll(d.linksDir, 0o700); err != nil {
			return err
		}
		changed, err := d.attachProgram(&state.Program{Program: "from_container", Interface: attachIf})
		if err != nil {
			return err
		}
		if _, err := o.finish(); err != nil {
			return err
		}
		fmt.Printf("attached=%v\n", changed)
		return nil
	})
}

// A kill between attaching a program and pinning its link (the fault
// FaultKillAfterAttach injects, in a child process doing the agent's
// attach) loses a first TCX attach — the kernel detaches an unpinned link
// when its process dies — and the restarted agent finds the program
// missing and attaches it again, once: after the restart the program is on
// its hook and pinned, exactly one of it, and a further restart changes
// nothing. With tc filters the program stays through the kill and the
// restart replaces it in place.
func TestPrivilegedAttachKilledBeforePin(t *testing.T) {
	if spec := os.Getenv(attachChildEnv); spec != "" {
		if err := attachChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, "attach child:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	requirePrivileged(t)
	self, err := os.Executable()
	must(t, err)
	pinName := attachment{prog: "from_container", ifname: attachIf}.pinName()

	for _, tc := range []struct {
		name string
		tcx  bool
		// killedOnHook is how many programs the hook holds right after the
		// kill.
		killedOnHook int
	}{
		{"tcx", true, 0},
		{"tc", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k, _ := kernel(); tc.tcx && !k.TCX {
				t.Skip("kernel without TCX")
			}
			dir := privateBPFFS(t)
			n := newNS(t)
			var ifindex int
			must(t, n.Do(func(ns.NetNS) error {
				if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: attachIf}, PeerName: attachIf + "p"}); err != nil {
					return err
				}
				l, err := netlinksafe.LinkByName(attachIf)
				if err != nil {
					return err
				}
				ifindex = l.Attrs().Index
				return netlink.LinkSetUp(l)
			}))
			onHook := func() int {
				t.Helper()
				var count int
				must(t, n.Do(func(ns.NetNS) error {
					if tc.tcx {
						res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
						if err != nil {
							return fmt.Errorf("query tcx programs: %w", err)
						}
						count = len(res.Programs)
						return nil
					}
					filters, err := netlinksafe.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, netlink.HANDLE_MIN_INGRESS)
					if err != nil {
						return fmt.Errorf("list tc filters: %w", err)
					}
					for _, f := range filters {
						if _, ok := f.(*netlink.BpfFilter); ok {
							count++
						}
					}
					return nil
				}))
				return count
			}
			tcxFlag := map[bool]string{true: "1", false: "0"}[tc.tcx]
			// run starts the child agent and returns its stdout and how it ended.
			run := func(fault string) (string, error) {
				cmd := exec.Command(self, "-test.run=^TestPrivilegedAttachKilledBeforePin$")
				cmd.Env = append(os.Environ(), attachChildEnv+"="+n.Path()+" "+dir+" "+tcxFlag, FaultKillAfterAttach+"="+fault)
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				must(t, cmd.Start())
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				select {
				case err := <-done:
					if err != nil && stderr.Len() > 0 {
						err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
					}
					return stdout.String(), err
				case <-time.After(60 * time.Second):
					cmd.Process.Kill()
					<-done
					t.Fatalf("the child agent did not finish: %s", stderr.String())
					return "", nil
				}
			}
			pinned := func() bool {
				_, err := os.Stat(filepath.Join(dir, "links", pinName))
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
				return err == nil
			}

			// 1. killed between attach and pin
			_, err := run(pinName)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("the child agent with the fault: %v, want killed by SIGKILL after attaching", err)
			}
			if pinned() {
				t.Fatalf("%s is pinned: the kill did not land between attach and pin", pinName)
			}
			if got := onHook(); got != tc.killedOnHook {
				t.Fatalf("after the kill: %d programs on %s ingress, want %d", got, attachIf, tc.killedOnHook)
			}

			// 2. the restart attaches it, once
			out, err := run("")
			if err != nil {
				t.Fatalf("restarted child agent: %v", err)
			}
			if want := fmt.Sprintf("attached=%v", tc.killedOnHook == 0); !strings.Contains(out, want) {
				t.Errorf("restart: output %q, want %q", out, want)
			}
			if !pinned() {
				t.Errorf("after the restart %s is not pinned", pinName)
			}
			if got := onHook(); got != 1 {
				t.Errorf("after the restart: %d programs on %s ingress, want 1", got, attachIf)
			}
			if tc.tcx {
				l, err := link.LoadPinnedLink(filepath.Join(dir, "links", pinName), nil)
				must(t, err)
				info, err := l.Info()
				l.Close()
				must(t, err)
				if info.TCX() == nil || int(info.TCX().Ifindex) != ifindex {
					t.Errorf("the pinned link is not on %s (ifindex %d): %+v", attachIf, ifindex, info.TCX())
				}
			}

			// 3. a further restart finds it attached and changes nothing
			out, err = run("")
			if err != nil {
				t.Fatalf("second restart: %v", err)
			}
			if !strings.Contains(out, "attached=false") {
				t.Errorf("second restart: output %q, want attached=false", out)
			}
			if got := onHook(); got != 1 {
				t.Errorf("after the second restart: %d programs on %s ingress, want 1", got, attachIf)
			}
		})
	}
}
