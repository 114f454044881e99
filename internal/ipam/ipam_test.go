package ipam

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func testLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newAlloc(t *testing.T, path, cidr string, reserved ...netip.Addr) *Allocator {
	t.Helper()
	a, err := New(testLog(), path, netip.MustParsePrefix(cidr), reserved...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func TestRouterIP(t *testing.T) {
	for _, tc := range []struct{ prefix, want string }{
		{"198.19.1.0/24", "198.19.1.1"},
		{"198.19.1.77/24", "198.19.1.1"},
		{"198.19.0.0/16", "198.19.0.1"},
	} {
		if got := RouterIP(netip.MustParsePrefix(tc.prefix)); got.String() != tc.want {
			t.Errorf("RouterIP(%s) = %s, want %s", tc.prefix, got, tc.want)
		}
	}
}

func TestExhaustionSlash28(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	extra := netip.MustParseAddr("198.19.1.9")
	a := newAlloc(t, path, "198.19.1.0/28", extra)
	// 16 addresses - network - broadcast - router - one extra reserved.
	if a.Size() != 12 || a.Free() != 12 {
		t.Fatalf("Size=%d Free=%d, want 12 12", a.Size(), a.Free())
	}
	var got []string
	for i := 0; i < 12; i++ {
		addr, err := a.Allocate("owner" + string(rune('a'+i)))
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		got = append(got, addr.String())
	}
	want := []string{
		"198.19.1.2", "198.19.1.3", "198.19.1.4", "198.19.1.5", "198.19.1.6", "198.19.1.7",
		"198.19.1.8", "198.19.1.10", "198.19.1.11", "198.19.1.12", "198.19.1.13", "198.19.1.14",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("allocated addresses (-want +got):\n%s", diff)
	}
	if _, err := a.Allocate("one-too-many"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate on a full pool: err = %v, want ErrExhausted", err)
	}
	if a.Free() != 0 {
		t.Fatalf("Free = %d, want 0", a.Free())
	}
	// Allocate is idempotent per owner, even when full.
	if addr, err := a.Allocate("ownera"); err != nil || addr.String() != "198.19.1.2" {
		t.Fatalf("Allocate(existing owner) = %v, %v", addr, err)
	}
	if err := a.Release("ownerc"); err != nil {
		t.Fatal(err)
	}
	if addr, err := a.Allocate("new"); err != nil || addr.String() != "198.19.1.4" {
		t.Fatalf("after a release: Allocate = %v, %v; want 198.19.1.4", addr, err)
	}
}

func TestNoImmediateReuse(t *testing.T) {
	a := newAlloc(t, filepath.Join(t.TempDir(), "ipam.json"), "198.19.2.0/24")
	first, err := a.Allocate("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release("a"); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	// Every other address is handed out before the released one comes back.
	for i := 0; i < a.Size()-1; i++ {
		owner := "o" + strings.Repeat("x", i%3) + string(rune('0'+i%10)) + "-" + itoa(i)
		addr, err := a.Allocate(owner)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if addr == first {
			t.Fatalf("allocation %d reused the just-released %s", i, first)
		}
		if prev, dup := seen[addr]; dup {
			t.Fatalf("%s handed out twice (%s, %s)", addr, prev, owner)
		}
		seen[addr] = owner
	}
	addr, err := a.Allocate("last")
	if err != nil || addr != first {
		t.Fatalf("last allocation = %v, %v; want the released %s", addr, err, first)
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func TestPersistenceRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "ipam.json")
	a := newAlloc(t, path, "198.19.3.0/24")
	for _, o := range []string{"a", "b", "c"} {
		if _, err := a.Allocate(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.AllocateSpecific("d", netip.MustParseAddr("198.19.3.100")); err != nil {
		t.Fatal(err)
	}
	if err := a.Release("b"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode = %v, want 0600", fi.Mode().Perm())
	}

	b := newAlloc(t, path, "198.19.3.0/24")
	if diff := cmp.Diff(a.List(), b.List(), addrCmp); diff != "" {
		t.Fatalf("restored allocations (-before +after):\n%s", diff)
	}
	// The cursor survives too: the next address follows the last one Allocate
	// handed out (.4), not the released .3.
	addr, err := b.Allocate("e")
	if err != nil || addr.String() != "198.19.3.5" {
		t.Fatalf("Allocate after restore = %v, %v; want 198.19.3.5", addr, err)
	}
	if got := b.Allocations()[0]; got.Owner != "a" || got.Since.IsZero() {
		t.Errorf("Allocations()[0] = %+v, want owner a with a timestamp", got)
	}

	// A changed pod CIDR is refused.
	if _, err := New(testLog(), path, netip.MustParsePrefix("198.19.4.0/24")); err == nil || !strings.Contains(err.Error(), "pod CIDR changed") {
		t.Fatalf("New with another pod CIDR: err = %v, want a pod CIDR changed error", err)
	}
}

func TestAllocateSpecific(t *testing.T) {
	a := newAlloc(t, filepath.Join(t.TempDir(), "ipam.json"), "198.19.5.0/24")
	tests := []struct {
		name    string
		owner   string
		addr    string
		wantErr error
	}{
		{"ok", "a", "198.19.5.50", nil},
		{"same again", "a", "198.19.5.50", nil},
		{"held by another", "b", "198.19.5.50", ErrInUse},
		{"router", "c", "198.19.5.1", ErrNotAllocatable},
		{"network", "c", "198.19.5.0", ErrNotAllocatable},
		{"broadcast", "c", "198.19.5.255", ErrNotAllocatable},
		{"outside", "c", "198.19.6.7", ErrNotAllocatable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := a.AllocateSpecific(tc.owner, netip.MustParseAddr(tc.addr))
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("AllocateSpecific(%s, %s) = %v, want %v", tc.owner, tc.addr, err, tc.wantErr)
			}
		})
	}
	if err := a.AllocateSpecific("a", netip.MustParseAddr("198.19.5.51")); err == nil {
		t.Fatal("an owner got a second address")
	}
}

func TestCorruptStateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.json")
	a := newAlloc(t, path, "198.19.7.0/24")
	for _, o := range []string{"a", "b", "c", "d"} {
		if _, err := a.Allocate(o); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Truncate in the middle of the third entry ("c").
	cut := strings.Index(string(data), `"c"`) + 10
	if err := os.WriteFile(path, data[:cut], 0o600); err != nil {
		t.Fatal(err)
	}
	b := newAlloc(t, path, "198.19.7.0/24")
	want := map[string]netip.Addr{"a": netip.MustParseAddr("198.19.7.2"), "b": netip.MustParseAddr("198.19.7.3")}
	if diff := cmp.Diff(want, b.List(), addrCmp); diff != "" {
		t.Fatalf("recovered allocations (-want +got):\n%s", diff)
	}
	matches, _ := filepath.Glob(path + ".corrupt-*")
	if len(matches) != 1 {
		t.Fatalf("corrupt file moved aside as %v, want one file", matches)
	}
	// The state file was rewritten and is valid again.
	c := newAlloc(t, path, "198.19.7.0/24")
	if diff := cmp.Diff(want, c.List(), addrCmp); diff != "" {
		t.Fatalf("after rewrite (-want +got):\n%s", diff)
	}

	// Garbage (not even JSON) starts empty.
	if err := os.WriteFile(path, []byte("\x00\x01garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newAlloc(t, path, "198.19.7.0/24")
	if len(d.List()) != 0 {
		t.Fatalf("garbage state restored %v", d.List())
	}
	matches, _ = filepath.Glob(path + ".corrupt-*")
	if len(matches) != 2 {
		t.Fatalf("corrupt files %v, want two", matches)
	}
}

func TestConcurrentAllocate(t *testing.T) {
	a := newAlloc(t, filepath.Join(t.TempDir(), "ipam.json"), "198.19.8.0/26")
	var wg sync.WaitGroup
	res := make([]netip.Addr, 40)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr, err := a.Allocate("o" + itoa(i))
			if err != nil {
				t.Error(err)
			}
			res[i] = addr
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, r := range res {
		if seen[r] {
			t.Fatalf("%s handed out twice", r)
		}
		seen[r] = true
	}
}

func TestNewRejects(t *testing.T) {
	for _, cidr := range []string{"198.19.0.0/31", "198.19.0.0/32", "2001:db8::/64"} {
		if _, err := New(testLog(), filepath.Join(t.TempDir(), "s.json"), netip.MustParsePrefix(cidr)); err == nil {
			t.Errorf("New(%s) succeeded", cidr)
		}
	}
}

// TestLeftoverTempFilesRemoved: a crash between writing the temporary state
// file and renaming it leaves the temporary file; the next start removes it
// and keeps the state file's content, never the temporary one's.
func TestLeftoverTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ipam.json")
	a := newAlloc(t, path, "198.19.9.0/24")
	if _, err := a.Allocate("kept"); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".ipam.json.tmp-42")
	if err := os.WriteFile(tmp, []byte(`{"version":1,"podCIDR":"198.19.9.0/24","allocations":{"ghost":{"ip":"198.19.9.7"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	b := newAlloc(t, path, "198.19.9.0/24")
	want := map[string]netip.Addr{"kept": netip.MustParseAddr("198.19.9.2")}
	if diff := cmp.Diff(want, b.List(), addrCmp); diff != "" {
		t.Fatalf("restored (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("temporary file still there: %v", err)
	}
}
