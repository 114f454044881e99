package endpoint

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/ipam"
	"glia.dev/glia/internal/state"
)

func testLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeDatapath records what is programmed.
type fakeDatapath struct {
	mu         sync.Mutex
	programmed map[api.Attachment]api.Endpoint
	deleted    []api.Attachment
	synced     [][]api.Endpoint
	failUpsert error
}

func newFakeDP() *fakeDatapath {
	return &fakeDatapath{programmed: map[api.Attachment]api.Endpoint{}}
}

func (f *fakeDatapath) Program(_ context.Context, sep *state.Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failUpsert != nil {
		return f.failUpsert
	}
	ep := ToWire(sep)
	f.programmed[ep.Attachment] = ep
	return nil
}

func (f *fakeDatapath) Remove(_ context.Context, sa state.Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := api.Attachment{ContainerID: sa.ContainerID, IfName: sa.IfName}
	delete(f.programmed, a)
	f.deleted = append(f.deleted, a)
	return nil
}

// Restored is what the datapath is handed at restore: it programs those
// and prunes every other.
func (f *fakeDatapath) Restored(seps []*state.Endpoint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var eps []api.Endpoint
	f.programmed = map[api.Attachment]api.Endpoint{}
	for _, sep := range seps {
		ep := ToWire(sep)
		eps = append(eps, ep)
		f.programmed[ep.Attachment] = ep
	}
	f.synced = append(f.synced, eps)
}

func (f *fakeDatapath) programmedKeys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for a := range f.programmed {
		out = append(out, a.Key())
	}
	sort.Strings(out)
	return out
}

type env struct {
	dir   string
	cidr  netip.Prefix
	alloc *ipam.Allocator
	dp    *fakeDatapath
	m     *Manager
	links map[string]bool
}

// newEnv builds a manager on dir (a fresh one when empty) with fake links;
// it does not call Restore.
func newEnv(t *testing.T, dir, cidr string) *env {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e := &env{dir: dir, cidr: netip.MustParsePrefix(cidr), dp: newFakeDP(), links: map[string]bool{}}
	var err error
	e.alloc, err = ipam.New(testLog(), filepath.Join(dir, "ipam.json"), e.cidr)
	if err != nil {
		t.Fatal(err)
	}
	e.m, err = NewManager(testLog(), Config{StateDir: dir, PodCIDR: e.cidr}, e.alloc, e.dp)
	if err != nil {
		t.Fatal(err)
	}
	e.m.linkExists = func(name string) (bool, error) { return e.links[name], nil }
	return e
}

func restored(t *testing.T, e *env) *env {
	t.Helper()
	if err := e.m.Restore(context.Background()); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return e
}

func att(id string) api.Attachment { return api.Attachment{ContainerID: id, IfName: "eth0"} }

// add does what the CNI ADD does against the manager and marks the host veth
// as existing.
func (e *env) add(t *testing.T, a api.Attachment) api.Endpoint {
	t.Helper()
	ctx := context.Background()
	al, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: a, PodNamespace: "default", PodName: "pod-" + a.ContainerID})
	if err != nil {
		t.Fatalf("Allocate(%s): %v", a, err)
	}
	ep := api.Endpoint{Attachment: a, IP: al.IP, Netns: "/run/netns/" + a.ContainerID, HostIfName: api.HostIfName(a),
		PodNamespace: "default", PodName: "pod-" + a.ContainerID}
	if err := e.m.UpsertEndpoint(ctx, ep); err != nil {
		t.Fatalf("UpsertEndpoint(%s): %v", a, err)
	}
	e.links[ep.HostIfName] = true
	got, err := e.m.GetEndpoint(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestNotReadyBeforeRestore(t *testing.T) {
	e := newEnv(t, "", "198.19.1.0/24")
	ctx := context.Background()
	if _, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att("a")}); !api.IsCode(err, api.CodeNotReady) {
		t.Fatalf("Allocate before Restore = %v, want not-ready", err)
	}
	if err := e.m.CNIStatus(ctx); !api.IsCode(err, api.CodeNotReady) {
		t.Fatalf("CNIStatus before Restore = %v, want not-ready", err)
	}
	restored(t, e)
	if err := e.m.CNIStatus(ctx); err != nil {
		t.Fatalf("CNIStatus = %v", err)
	}
	if err := e.m.Restore(ctx); err == nil {
		t.Fatal("a second Restore succeeded")
	}
}

func TestDuplicateAttachmentConflict(t *testing.T) {
	e := restored(t, newEnv(t, "", "198.19.1.0/24"))
	ctx := context.Background()
	orig := e.add(t, att("a"))
	_, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att("a")})
	if !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("second Allocate = %v, want conflict", err)
	}
	got, err := e.m.GetEndpoint(ctx, att("a"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(orig, got); diff != "" {
		t.Fatalf("original endpoint changed (-before +after):\n%s", diff)
	}
	if addr, _ := e.alloc.Lookup(att("a").Key()); addr.String() != orig.IP {
		t.Fatalf("allocation changed to %s", addr)
	}
	if err := e.m.Release(ctx, att("a")); !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("Release of a live endpoint's address = %v, want conflict", err)
	}
}

func TestAllocateWithoutEndpointIsIdempotent(t *testing.T) {
	e := restored(t, newEnv(t, "", "198.19.1.0/24"))
	ctx := context.Background()
	a1, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att("a")})
	if err != nil {
		t.Fatal(err)
	}
	a2, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att("a")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a1, a2); diff != "" {
		t.Fatalf("second Allocate differs:\n%s", diff)
	}
	want := api.Allocation{Attachment: att("a"), IP: "198.19.1.2", PodCIDR: "198.19.1.0/24", Gateway: "169.254.1.1", MTU: 1500}
	if diff := cmp.Diff(want, a1); diff != "" {
		t.Fatalf("Allocate (-want +got):\n%s", diff)
	}
}

func TestUpsertValidation(t *testing.T) {
	e := restored(t, newEnv(t, "", "198.19.1.0/24"))
	ctx := context.Background()
	al, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att("a")})
	if err != nil {
		t.Fatal(err)
	}
	base := api.Endpoint{Attachment: att("a"), IP: al.IP, Netns: "/run/netns/a", HostIfName: api.HostIfName(att("a"))}
	tests := []struct {
		name     string
		mutate   func(*api.Endpoint)
		wantCode string
	}{
		{"other ip", func(ep *api.Endpoint) { ep.IP = "198.19.1.99" }, api.CodeConflict},
		{"no allocation", func(ep *api.Endpoint) { ep.Attachment = att("b") }, api.CodeConflict},
		{"bad ip", func(ep *api.Endpoint) { ep.IP = "nope" }, api.CodeBadRequest},
		{"no host if", func(ep *api.Endpoint) { ep.HostIfName = "" }, api.CodeBadRequest},
		{"no netns", func(ep *api.Endpoint) { ep.Netns = "" }, api.CodeBadRequest},
		{"bad pod MAC", func(ep *api.Endpoint) { ep.PodMAC = "02:00" }, api.CodeBadRequest},
		// The attachment is checked where it enters the agent: the socket
		// API's handler (api tests) and the file reader (TestStoreLoad...).
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ep := base
			tc.mutate(&ep)
			if err := e.m.UpsertEndpoint(ctx, ep); !api.IsCode(err, tc.wantCode) {
				t.Fatalf("UpsertEndpoint = %v, want %s", err, tc.wantCode)
			}
		})
	}
	if eps, _ := e.m.ListEndpoints(ctx); len(eps) != 0 {
		t.Fatalf("refused upserts left endpoints %v", eps)
	}
}

func TestUpsertDatapathFailureRollsBack(t *testing.T) {
	e := restored(t, newEnv(t, "", "198.19.1.0/24"))
	ctx := context.Background()
	al, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att("a")})
	if err != nil {
		t.Fatal(err)
	}
	e.dp.failUpsert = errors.New("map full")
	ep := api.Endpoint{Attachment: att("a"), IP: al.IP, Netns: "/run/netns/a", HostIfName: api.HostIfName(att("a"))}
	if err := e.m.UpsertEndpoint(ctx, ep); err == nil {
		t.Fatal("UpsertEndpoint succeeded with a failing datapath")
	}
	if _, err := e.m.GetEndpoint(ctx, att("a")); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("endpoint after failed upsert: %v", err)
	}
	if files, _ := filepath.Glob(filepath.Join(e.dir, "endpoints", "*.json")); len(files) != 0 {
		t.Fatalf("failed upsert left files %v", files)
	}
	// The CNI plugin undoes with Release, which must now work.
	if err := e.m.Release(ctx, att("a")); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.alloc.Lookup(att("a").Key()); ok {
		t.Fatal("address still allocated after Release")
	}
}

func TestDeleteEndpoint(t *testing.T) {
	e := restored(t, newEnv(t, "", "198.19.1.0/24"))
	ctx := context.Background()
	if err := e.m.DeleteEndpoint(ctx, att("unknown")); err != nil {
		t.Fatalf("DeleteEndpoint(unknown) = %v", err)
	}
	e.add(t, att("a"))
	if err := e.m.DeleteEndpoint(ctx, att("a")); err != nil {
		t.Fatal(err)
	}
	if err := e.m.DeleteEndpoint(ctx, att("a")); err != nil {
		t.Fatalf("second delete = %v", err)
	}
	if _, ok := e.alloc.Lookup(att("a").Key()); ok {
		t.Fatal("address still allocated")
	}
	if got := e.dp.programmedKeys(); len(got) != 0 {
		t.Fatalf("datapath still has %v", got)
	}
	if files, _ := filepath.Glob(filepath.Join(e.dir, "endpoints", "*")); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
}

func TestGC(t *testing.T) {
	e := restored(t, newEnv(t, "", "198.19.1.0/24"))
	ctx := context.Background()
	e.add(t, att("keep"))
	e.add(t, att("gone"))
	if _, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att("halfway")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att("pending")}); err != nil {
		t.Fatal(err)
	}
	// Owners that are not attachments belong to someone else.
	if _, err := e.alloc.Allocate("health"); err != nil {
		t.Fatal(err)
	}
	res, err := e.m.GC(ctx, api.GCRequest{Valid: []api.Attachment{att("keep"), att("pending")}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]api.Attachment{att("gone"), att("halfway")}, res.Released); diff != "" {
		t.Fatalf("released (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"keep/eth0"}, e.dp.programmedKeys()); diff != "" {
		t.Fatalf("programmed (-want +got):\n%s", diff)
	}
	owners := e.alloc.List()
	var got []string
	for o := range owners {
		got = append(got, o)
	}
	sort.Strings(got)
	if diff := cmp.Diff([]string{"health", "keep/eth0", "pending/eth0"}, got); diff != "" {
		t.Fatalf("allocations after GC (-want +got):\n%s", diff)
	}
}

func TestRestore(t *testing.T) {
	dir := t.TempDir()
	first := restored(t, newEnv(t, dir, "198.19.1.0/24"))
	live := first.add(t, att("live"))
	orphan := first.add(t, att("orphan"))
	unparsable := first.add(t, att("broken"))

	epDir := filepath.Join(dir, "endpoints")
	brokenFile := filepath.Join(epDir, fileOf(unparsable.Attachment))
	data, err := os.ReadFile(brokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(brokenFile, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	// A temporary file of an interrupted write.
	if err := os.WriteFile(filepath.Join(epDir, ".x.json.tmp-123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The IPAM state is lost too: the live endpoint's address must be
	// reserved again from its endpoint file.
	if err := os.Remove(filepath.Join(dir, "ipam.json")); err != nil {
		t.Fatal(err)
	}

	second := newEnv(t, dir, "198.19.1.0/24")
	second.links[live.HostIfName] = true
	second.links[unparsable.HostIfName] = true // its pod runs, but its file is gone
	restored(t, second)
	ctx := context.Background()

	eps, err := second.m.ListEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]api.Endpoint{live}, eps, cmpopts.EquateApproxTime(time.Millisecond)); diff != "" {
		t.Fatalf("restored endpoints (-want +got):\n%s", diff)
	}
	// Only the live endpoint is handed over; the datapath prunes the orphan's state.
	if len(second.dp.synced) != 1 || len(second.dp.synced[0]) != 1 || second.dp.synced[0][0].Attachment != live.Attachment {
		t.Fatalf("Restored calls = %v, want one with the live endpoint", second.dp.synced)
	}
	if second.dp.programmed[orphan.Attachment].IP != "" {
		t.Fatal("the orphan is still programmed after the restore")
	}
	if addr, ok := second.alloc.Lookup(live.Key()); !ok || addr.String() != live.IP {
		t.Fatalf("live endpoint's address = %v %v, want %s", addr, ok, live.IP)
	}
	if _, ok := second.alloc.Lookup(orphan.Key()); ok {
		t.Fatal("orphan's address still allocated")
	}
	if matches, _ := filepath.Glob(brokenFile + ".corrupt-*"); len(matches) != 1 {
		t.Fatalf("unparsable file moved aside as %v", matches)
	}
	if _, err := os.Stat(filepath.Join(epDir, fileOf(orphan.Attachment))); !os.IsNotExist(err) {
		t.Fatalf("orphan file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(epDir, ".x.json.tmp-123")); !os.IsNotExist(err) {
		t.Fatalf("temporary file: %v", err)
	}
	// A new allocation never collides with the live endpoint.
	al, err := second.m.Allocate(ctx, api.AllocateRequest{Attachment: att("new")})
	if err != nil {
		t.Fatal(err)
	}
	if al.IP == live.IP {
		t.Fatalf("new allocation reused the live endpoint's %s", al.IP)
	}
}

func TestCollectStale(t *testing.T) {
	e := restored(t, newEnv(t, "", "198.19.1.0/24"))
	ctx := context.Background()
	e.add(t, att("live"))
	for _, id := range []string{"crashed", "vethleft"} {
		if _, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att(id)}); err != nil {
			t.Fatal(err)
		}
	}
	e.links[api.HostIfName(att("vethleft"))] = true
	if _, err := e.alloc.Allocate("health"); err != nil {
		t.Fatal(err)
	}

	// Within the grace period nothing is released.
	released, err := e.m.CollectStale(ctx)
	if err != nil || len(released) != 0 {
		t.Fatalf("CollectStale within grace = %v, %v", released, err)
	}
	e.m.now = func() time.Time { return time.Now().Add(DefaultStaleGrace + time.Minute) }
	released, err = e.m.CollectStale(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"crashed/eth0"}, released); diff != "" {
		t.Fatalf("released (-want +got):\n%s", diff)
	}
	for _, owner := range []string{"live/eth0", "vethleft/eth0", "health"} {
		if _, ok := e.alloc.Lookup(owner); !ok {
			t.Errorf("%s lost its address", owner)
		}
	}
}

// A CNI DEL that never reached the agent (it was starting or down: the
// plugin removed the veth and returned) leaves an endpoint whose host veth
// is gone; SweepGone deletes it as the DEL would have, and leaves live
// endpoints alone. Before Restore it refuses.
func TestSweepGone(t *testing.T) {
	ctx := context.Background()
	if _, err := newEnv(t, "", "198.19.1.0/24").m.SweepGone(ctx); err == nil {
		t.Fatal("SweepGone before Restore succeeded")
	}
	e := restored(t, newEnv(t, "", "198.19.1.0/24"))
	e.add(t, att("live"))
	gone := e.add(t, att("deleted-while-down"))
	if swept, err := e.m.SweepGone(ctx); err != nil || len(swept) != 0 {
		t.Fatalf("SweepGone with every veth present = %v, %v", swept, err)
	}
	delete(e.links, gone.HostIfName) // the plugin's DEL removed the veth; the agent never heard
	swept, err := e.m.SweepGone(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"deleted-while-down/eth0"}, swept); diff != "" {
		t.Fatalf("swept (-want +got):\n%s", diff)
	}
	if _, ok := e.alloc.Lookup(gone.Attachment.Key()); ok {
		t.Error("the swept endpoint's address is still allocated")
	}
	if _, ok := e.alloc.Owner(netip.MustParseAddr(gone.IP)); ok {
		t.Errorf("address %s still has an owner", gone.IP)
	}
	if diff := cmp.Diff([]string{"live/eth0"}, e.dp.programmedKeys()); diff != "" {
		t.Errorf("datapath endpoints (-want +got):\n%s", diff)
	}
	if files, _ := filepath.Glob(filepath.Join(e.dir, "endpoints", "*")); len(files) != 1 {
		t.Errorf("endpoint files %v, want the live one only", files)
	}
	if _, ok := e.alloc.Lookup(att("live").Key()); !ok {
		t.Error("the live endpoint lost its address")
	}
	// The late DEL, if it comes, still succeeds; a second sweep finds nothing.
	if err := e.m.DeleteEndpoint(ctx, gone.Attachment); err != nil {
		t.Errorf("late DeleteEndpoint = %v", err)
	}
	if swept, err := e.m.SweepGone(ctx); err != nil || len(swept) != 0 {
		t.Errorf("second SweepGone = %v, %v", swept, err)
	}
	// A restart finds the same: nothing to restore but the live endpoint.
	e2 := newEnv(t, e.dir, "198.19.1.0/24")
	e2.links = e.links
	restored(t, e2)
	if n := e2.m.Count(); n != 1 {
		t.Errorf("after restart %d endpoints, want 1", n)
	}
}

func TestCNIStatusExhausted(t *testing.T) {
	// A /30 has a single allocatable address (.2; .1 is the router's).
	e := restored(t, newEnv(t, "", "198.19.1.0/30"))
	ctx := context.Background()
	e.add(t, att("a"))
	if err := e.m.CNIStatus(ctx); !api.IsCode(err, api.CodeExhausted) {
		t.Fatalf("CNIStatus = %v, want exhausted", err)
	}
	if _, err := e.m.Allocate(ctx, api.AllocateRequest{Attachment: att("b")}); !api.IsCode(err, api.CodeExhausted) {
		t.Fatalf("Allocate = %v, want exhausted", err)
	}
}

func TestNewManagerRejects(t *testing.T) {
	dir := t.TempDir()
	alloc, err := ipam.New(testLog(), filepath.Join(dir, "ipam.json"), netip.MustParsePrefix("198.19.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"other cidr", Config{StateDir: dir, PodCIDR: netip.MustParsePrefix("198.19.2.0/24")}},
		{"no dir", Config{PodCIDR: netip.MustParsePrefix("198.19.1.0/24")}},
		{"tiny mtu", Config{StateDir: dir, PodCIDR: netip.MustParsePrefix("198.19.1.0/24"), MTU: 100}},
	} {
		if _, err := NewManager(testLog(), tc.cfg, alloc, newFakeDP()); err == nil {
			t.Errorf("%s: NewManager succeeded", tc.name)
		}
	}
}

// fileOf is the file name of an attachment given in the wire form.
func fileOf(a api.Attachment) string { return fileName(attachment(a)) }
