package endpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/ipam"
)

// TestRestoreCrashStates damages the state directory in the ways a crash or
// an operator can while the agent is down, restarts, and checks that the
// agent starts and never hands out the address of a pod that still runs:
// on a /29 (5 addresses) with 3 live pods, exactly 2 new addresses are left.
func TestRestoreCrashStates(t *testing.T) {
	pods := []api.Attachment{att("p1"), att("p2"), att("p3")}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		// endpoints still known after the restart
		wantEPs []string
	}{
		{"intact", func(*testing.T, string) {}, []string{"p1/eth0", "p2/eth0", "p3/eth0"}},
		{"endpoint file truncated", func(t *testing.T, dir string) {
			cut(t, filepath.Join(dir, "endpoints", fileOf(att("p2"))), 0.5)
		}, []string{"p1/eth0", "p3/eth0"}},
		{"endpoint file empty", func(t *testing.T, dir string) {
			cut(t, filepath.Join(dir, "endpoints", fileOf(att("p2"))), 0)
		}, []string{"p1/eth0", "p3/eth0"}},
		{"endpoint file of another attachment", func(t *testing.T, dir string) {
			ep := filepath.Join(dir, "endpoints")
			if err := os.Rename(filepath.Join(ep, fileOf(att("p2"))), filepath.Join(ep, fileOf(att("zz")))); err != nil {
				t.Fatal(err)
			}
		}, []string{"p1/eth0", "p3/eth0"}},
		{"ipam file empty", func(t *testing.T, dir string) {
			cut(t, filepath.Join(dir, "ipam.json"), 0)
		}, []string{"p1/eth0", "p2/eth0", "p3/eth0"}},
		{"ipam file truncated", func(t *testing.T, dir string) {
			cut(t, filepath.Join(dir, "ipam.json"), 0.6)
		}, []string{"p1/eth0", "p2/eth0", "p3/eth0"}},
		{"ipam file missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "ipam.json")); err != nil {
				t.Fatal(err)
			}
		}, []string{"p1/eth0", "p2/eth0", "p3/eth0"}},
		{"endpoint directory missing", func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, "endpoints")); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"temporary files of interrupted writes", func(t *testing.T, dir string) {
			for _, f := range []string{
				filepath.Join(dir, ".ipam.json.tmp-1"),
				filepath.Join(dir, "endpoints", "."+fileOf(att("p9"))+".tmp-2"),
			} {
				if err := os.WriteFile(f, []byte(`{"version":1,"allocations":{"p9/eth0":{"ip":"198.19.1.6"}`), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}, []string{"p1/eth0", "p2/eth0", "p3/eth0"}},
		{"junk in the endpoint directory", func(t *testing.T, dir string) {
			ep := filepath.Join(dir, "endpoints")
			if err := os.Mkdir(filepath.Join(ep, "sub.json"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(ep, "notes.txt"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(ep, "bad+eth0.json"), []byte(`{"containerID":"bad","ifName":"eth0","ip":"198.19.1.3","netns":"/x","hostIfName":"glx"}`), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"p1/eth0", "p2/eth0", "p3/eth0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first := restored(t, newEnv(t, dir, "198.19.1.0/29"))
			ips := map[string]string{}
			for _, a := range pods {
				ips[a.Key()] = first.add(t, a).IP
			}
			tc.damage(t, dir)

			second := newEnv(t, dir, "198.19.1.0/29")
			for _, a := range pods {
				second.links[api.HostIfName(a)] = true
			}
			restored(t, second)
			ctx := context.Background()
			eps, err := second.m.ListEndpoints(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var gotEPs []string
			for _, ep := range eps {
				gotEPs = append(gotEPs, ep.Key())
				if ep.IP != ips[ep.Key()] {
					t.Errorf("endpoint %s restored with %s, want %s", ep.Key(), ep.IP, ips[ep.Key()])
				}
			}
			if diff := cmp.Diff(tc.wantEPs, gotEPs); diff != "" {
				t.Errorf("endpoints after restart (-want +got):\n%s", diff)
			}
			if tmps, _ := filepath.Glob(filepath.Join(dir, "endpoints", ".*")); len(tmps) != 0 {
				t.Errorf("temporary endpoint files left: %v", tmps)
			}
			if tmps, _ := filepath.Glob(filepath.Join(dir, ".ipam.json.tmp-*")); len(tmps) != 0 {
				t.Errorf("temporary ipam files left: %v", tmps)
			}

			// Stale collection, long after the grace period, keeps the
			// addresses of pods whose veth exists.
			second.m.now = func() time.Time { return time.Now().Add(time.Hour) }
			if released, err := second.m.CollectStale(ctx); err != nil || len(released) != 0 {
				t.Errorf("CollectStale = %v, %v; want nothing released", released, err)
			}
			// Exactly the two free addresses are handed out, never a
			// live pod's.
			var got []string
			for i := 0; ; i++ {
				al, err := second.m.Allocate(ctx, api.AllocateRequest{Attachment: att("new" + string(rune('a'+i)))})
				if api.IsCode(err, api.CodeExhausted) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, al.IP)
				for owner, ip := range ips {
					if al.IP == ip {
						t.Errorf("new attachment got %s, the address of live pod %s", ip, owner)
					}
				}
				if i > 5 {
					t.Fatal("more allocations than the /29 holds")
				}
			}
			sort.Strings(got)
			if diff := cmp.Diff([]string{"198.19.1.5", "198.19.1.6"}, got); diff != "" {
				t.Errorf("new addresses (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRestoreOrphanWhileDown: a pod whose veth was deleted while the agent
// was down is an orphan at restart: its endpoint, file and address go.
func TestRestoreOrphanWhileDown(t *testing.T) {
	dir := t.TempDir()
	first := restored(t, newEnv(t, dir, "198.19.1.0/29"))
	keep := first.add(t, att("keep"))
	gone := first.add(t, att("gone"))

	second := newEnv(t, dir, "198.19.1.0/29")
	second.links[keep.HostIfName] = true // gone's veth was deleted
	restored(t, second)
	if _, err := second.m.GetEndpoint(context.Background(), gone.Attachment); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("orphan endpoint after restart: %v", err)
	}
	if _, ok := second.alloc.Lookup(gone.Key()); ok {
		t.Fatal("orphan's address still allocated")
	}
	if _, err := os.Stat(filepath.Join(dir, "endpoints", fileOf(gone.Attachment))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("orphan's file: %v", err)
	}
	// The orphan is not handed to the datapath, which prunes its state.
	if len(second.dp.synced) != 1 || len(second.dp.synced[0]) != 1 || second.dp.synced[0][0].Attachment != keep.Attachment {
		t.Fatalf("restored to the datapath: %v, want only %s", second.dp.synced, keep.Attachment)
	}
	// The restart persisted the release: a third start agrees.
	third, err := ipam.New(testLog(), filepath.Join(dir, "ipam.json"), second.cidr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := third.Lookup(gone.Key()); ok {
		t.Fatal("the release of the orphan's address was not persisted")
	}
}

// cut truncates path to frac of its length.
func cut(t *testing.T, path string, frac float64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data[:int(float64(len(data))*frac)], 0o600); err != nil {
		t.Fatal(err)
	}
}
