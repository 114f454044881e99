package cni_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"glia.dev/glia/internal/api"
)

// TestPrivilegedCNICrashRestore damages the agent's state the way crashes
// and operators do while the agent is down — a truncated endpoint file, a
// truncated IPAM file, temporary files of interrupted writes, an empty file
// for a pod that never finished, a pod veth deleted — and checks that the
// agent starts, drops the bad entries, never hands out a live pod's address
// again, and cleans the orphan.
func TestPrivilegedCNICrashRestore(t *testing.T) {
	// A /29 offers 5 pod addresses (.2-.6): few enough that re-issuing a
	// live pod's address would show.
	l := newLab(t, "198.19.17.0/29")
	l.staleGrace = 1 // collect every stale allocation at once
	pods := map[string]ns.NetNS{}
	ips := map[string]string{}
	for _, id := range []string{"a", "b", "c", "d"} {
		pods[id] = newNS(t)
		if _, err := l.add("1.1.0", id, pods[id]); err != nil {
			t.Fatal(err)
		}
		addr, _ := l.alloc.Lookup(id + "/eth0")
		ips[id] = addr.String()
	}
	if diff := cmp.Diff(map[string]string{"a": "198.19.17.2", "b": "198.19.17.3", "c": "198.19.17.4", "d": "198.19.17.5"}, ips); diff != "" {
		t.Fatalf("addresses before the crash (-want +got):\n%s", diff)
	}
	l.stopAgent()

	epDir := filepath.Join(l.stateDir, "endpoints")
	ipamFile := filepath.Join(l.stateDir, "ipam.json")
	truncate := func(path string, at func([]byte) int) {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data[:at(data)], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// a: its endpoint file is cut in half; its pod keeps running.
	truncate(filepath.Join(epDir, "a+eth0.json"), func(b []byte) int { return len(b) / 2 })
	// The IPAM file is cut inside c's entry: c and d survive only in
	// their endpoint files.
	truncate(ipamFile, func(b []byte) int { return strings.Index(string(b), `"c/eth0"`) + 5 })
	// Temporary files of writes a crash interrupted, and an empty file of
	// an endpoint whose write never completed.
	write(filepath.Join(l.stateDir, ".ipam.json.tmp-1234"), `{"version":1,"allocations":{"x/eth0":{"ip":"198.19.17.6"}}}`)
	write(filepath.Join(epDir, ".c+eth0.json.tmp-5678"), `{"containerID":"c"`)
	write(filepath.Join(epDir, "ghost+eth0.json"), "")
	// b: its veth is deleted while the agent is down.
	bAtt := api.Attachment{ContainerID: "b", IfName: "eth0"}
	if err := l.inNode(func() error {
		link, err := netlinksafe.LinkByName(api.HostIfName(bAtt))
		if err != nil {
			return err
		}
		return netlink.LinkDel(link)
	}); err != nil {
		t.Fatal(err)
	}

	l.startAgent()
	ctx := context.Background()
	st := l.state()
	wantAllocs := map[string]string{"a/eth0": ips["a"], "c/eth0": ips["c"], "d/eth0": ips["d"]}
	if diff := cmp.Diff(wantAllocs, st.Allocs); diff != "" {
		t.Errorf("allocations after restart (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"c/eth0", "d/eth0"}, st.Endpoints); diff != "" {
		t.Errorf("endpoints after restart (-want +got):\n%s", diff)
	}
	var kept, aside []string
	for _, f := range st.Files {
		if strings.Contains(f, ".corrupt-") {
			aside = append(aside, f[:strings.Index(f, ".corrupt-")])
		} else {
			kept = append(kept, f)
		}
	}
	sort.Strings(aside)
	if diff := cmp.Diff([]string{"c+eth0.json", "d+eth0.json"}, kept); diff != "" {
		t.Errorf("endpoint files (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a+eth0.json", "ghost+eth0.json"}, aside); diff != "" {
		t.Errorf("endpoint files moved aside (-want +got):\n%s", diff)
	}
	if m, _ := filepath.Glob(filepath.Join(l.stateDir, ".ipam.json.tmp-*")); len(m) != 0 {
		t.Errorf("temporary ipam files left: %v", m)
	}
	if m, _ := filepath.Glob(ipamFile + ".corrupt-*"); len(m) != 1 {
		t.Errorf("truncated ipam file moved aside as %v, want one file", m)
	}

	// The orphan's address is free again; the live pods' are not: two new
	// pods take .6 and b's .3, and the third finds the node full.
	var released []string
	if err := l.inNode(func() error {
		var err error
		released, err = l.mgr.CollectStale(ctx)
		return err
	}); err != nil || len(released) != 0 {
		t.Errorf("CollectStale = %v, %v; want nothing (a's veth exists)", released, err)
	}
	got := map[string]string{}
	for _, id := range []string{"e", "f"} {
		pods[id] = newNS(t)
		if _, err := l.add("1.1.0", id, pods[id]); err != nil {
			t.Fatalf("ADD %s after restart: %v", id, err)
		}
		addr, _ := l.alloc.Lookup(id + "/eth0")
		got[id] = addr.String()
	}
	if diff := cmp.Diff(map[string]string{"e": "198.19.17.6", "f": ips["b"]}, got); diff != "" {
		t.Errorf("new pods' addresses (-want +got):\n%s", diff)
	}
	if _, err := l.add("1.1.0", "g", newNS(t)); err == nil {
		t.Error("ADD on a full node succeeded: a live pod's address was handed out again")
	} else if cniCode(err) != types.ErrInternal || !strings.Contains(err.Error(), "no free address") {
		t.Errorf("ADD on a full node = %v, want an exhaustion error", err)
	}

	// The restored pods still pass CHECK; a keeps its address.
	for _, id := range []string{"c", "d"} {
		if err := l.check("1.1.0", id, pods[id]); err != nil {
			t.Errorf("CHECK %s after restart: %v", id, err)
		}
	}
	if v, err := inspectPod(t, pods["a"]); err != nil || len(v.Addrs) != 1 || v.Addrs[0] != ips["a"]+"/32" {
		t.Errorf("pod a after restart: %+v, %v", v, err)
	}
	if podHasEth0(t, pods["b"]) {
		t.Error("pod b's eth0 survived the deletion of its veth")
	}
	// DEL of the pod whose endpoint file was lost frees its address.
	if err := l.del("1.1.0", "a", pods["a"]); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.alloc.Lookup("a/eth0"); ok {
		t.Error("DEL of a kept its address")
	}
}
