package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeBackend keeps endpoints in memory and fails with err when set.
type fakeBackend struct {
	mu  sync.Mutex
	err error
	eps map[Attachment]Endpoint
}

func (f *fakeBackend) Allocate(_ context.Context, req AllocateRequest) (Allocation, error) {
	if f.err != nil {
		return Allocation{}, f.err
	}
	return Allocation{Attachment: req.Attachment, IP: "198.19.1.2", PodCIDR: "198.19.1.0/24", Gateway: "169.254.1.1", MTU: 1500}, nil
}
func (f *fakeBackend) Release(context.Context, Attachment) error { return f.err }
func (f *fakeBackend) UpsertEndpoint(_ context.Context, ep Endpoint) error {
	if f.err != nil {
		return f.err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.eps[ep.Attachment] = ep
	return nil
}
func (f *fakeBackend) DeleteEndpoint(_ context.Context, a Attachment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.eps, a)
	return f.err
}
func (f *fakeBackend) GetEndpoint(_ context.Context, a Attachment) (Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ep, ok := f.eps[a]
	if !ok {
		return Endpoint{}, Errorf(CodeNotFound, "no endpoint %s", a)
	}
	return ep, nil
}
func (f *fakeBackend) ListEndpoints(context.Context) ([]Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Endpoint
	for _, ep := range f.eps {
		out = append(out, ep)
	}
	return out, f.err
}
func (f *fakeBackend) GC(_ context.Context, req GCRequest) (GCResult, error) {
	return GCResult{Released: []Attachment{{ContainerID: "gone", IfName: "eth0"}}}, f.err
}
func (f *fakeBackend) CNIStatus(context.Context) error { return f.err }

func TestHandler(t *testing.T) {
	big := `{"containerID":"` + strings.Repeat("a", MaxRequestBytes) + `","ifName":"eth0"}`
	tests := []struct {
		name       string
		backendErr error
		method     string
		path       string
		body       string
		wantStatus int
		wantCode   string
	}{
		{"allocate ok", nil, "POST", PathIPAM, `{"containerID":"abc","ifName":"eth0"}`, 200, ""},
		{"bad json", nil, "POST", PathIPAM, `{"containerID":`, 400, CodeBadRequest},
		{"empty body", nil, "POST", PathIPAM, ``, 400, CodeBadRequest},
		{"unknown field", nil, "POST", PathIPAM, `{"containerID":"abc","ifName":"eth0","bogus":1}`, 400, CodeBadRequest},
		{"trailing data", nil, "POST", PathIPAM, `{"containerID":"abc","ifName":"eth0"} {}`, 400, CodeBadRequest},
		{"oversize body", nil, "POST", PathIPAM, big, 413, CodeTooLarge},
		{"bad container id", nil, "POST", PathIPAM, `{"containerID":"../x","ifName":"eth0"}`, 400, CodeBadRequest},
		{"bad ifname", nil, "POST", PathIPAM, `{"containerID":"abc","ifName":"eth 0"}`, 400, CodeBadRequest},
		{"conflict", Errorf(CodeConflict, "exists"), "POST", PathIPAM, `{"containerID":"abc","ifName":"eth0"}`, 409, CodeConflict},
		{"exhausted", Errorf(CodeExhausted, "full"), "POST", PathIPAM, `{"containerID":"abc","ifName":"eth0"}`, 503, CodeExhausted},
		{"internal", errors.New("disk on fire"), "POST", PathIPAM, `{"containerID":"abc","ifName":"eth0"}`, 500, CodeInternal},
		{"wrapped api error", errors.Join(errors.New("ctx"), Errorf(CodeNotReady, "restoring")), "GET", PathCNIStatus, ``, 503, CodeNotReady},
		{"wrong method", nil, "PATCH", PathIPAM, ``, 405, CodeBadRequest},
		{"unknown path", nil, "GET", "/v1/nope", ``, 404, CodeNotFound},
		{"release needs query", nil, "DELETE", PathIPAM, ``, 400, CodeBadRequest},
		{"release ok", nil, "DELETE", PathIPAM + "?containerID=abc&ifName=eth0", ``, 204, ""},
		{"get unknown endpoint", nil, "GET", PathEndpoint + "?containerID=abc&ifName=eth0", ``, 404, CodeNotFound},
		{"upsert unknown field", nil, "PUT", PathEndpoints, `{"containerID":"abc","ifName":"eth0","ip":"198.19.1.2","hostIfName":"glx","extra":true}`, 400, CodeBadRequest},
		{"upsert ok", nil, "PUT", PathEndpoints, `{"containerID":"abc","ifName":"eth0","ip":"198.19.1.2","hostIfName":"glx"}`, 204, ""},
		{"list", nil, "GET", PathEndpoints, ``, 200, ""},
		{"gc", nil, "POST", PathGC, `{"valid":[{"containerID":"abc","ifName":"eth0"}]}`, 200, ""},
		{"gc empty field", nil, "POST", PathGC, `{"valid":[{"containerID":"","ifName":"eth0"}]}`, 400, CodeBadRequest},
		{"healthz", nil, "GET", PathHealthz, ``, 200, ""},
		{"status", nil, "GET", PathStatus, ``, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHandler(testLog(), &fakeBackend{err: tc.backendErr, eps: map[Attachment]Endpoint{}},
				func(context.Context) (any, error) { return map[string]string{"mode": "test"}, nil })
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if tc.wantCode != "" {
				var e Error
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
					t.Fatalf("error body %q: %v", rec.Body, err)
				}
				if e.Code != tc.wantCode || e.Message == "" {
					t.Fatalf("error = %+v, want code %q with a message", e, tc.wantCode)
				}
			}
		})
	}
}

func TestHealthzNotReady(t *testing.T) {
	h := NewHandler(testLog(), &fakeBackend{}, func(context.Context) (any, error) { return nil, errors.New("restoring endpoints") })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", PathHealthz, nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("healthz = %d, want 503", rec.Code)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		a    Attachment
		ok   bool
		name string
	}{
		{Attachment{"abc123", "eth0"}, true, "plain"},
		{Attachment{"a.b_c-d", "net1"}, true, "punctuation"},
		{Attachment{"", "eth0"}, false, "empty id"},
		{Attachment{"-abc", "eth0"}, false, "leading dash"},
		{Attachment{"a/b", "eth0"}, false, "slash in id"},
		{Attachment{strings.Repeat("a", MaxContainerIDLen+1), "eth0"}, false, "long id"},
		{Attachment{"abc", ""}, false, "empty ifname"},
		{Attachment{"abc", "."}, false, "dot"},
		{Attachment{"abc", ".."}, false, "dotdot"},
		{Attachment{"abc", "a/b"}, false, "slash"},
		{Attachment{"abc", "a:b"}, false, "colon"},
		{Attachment{"abc", "a\tb"}, false, "tab"},
		{Attachment{"abc", "0123456789abcdef"}, false, "16 bytes"},
		{Attachment{"abc", "0123456789abcde"}, true, "15 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateAttachment(tc.a)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateAttachment(%q) = %v, want ok=%v", tc.a, err, tc.ok)
			}
			if err != nil && !IsCode(err, CodeBadRequest) {
				t.Fatalf("error %v is not a bad-request", err)
			}
			if tc.ok {
				back, ok := ParseAttachmentKey(tc.a.Key())
				if !ok || back != tc.a {
					t.Fatalf("ParseAttachmentKey(%q) = %v, %v", tc.a.Key(), back, ok)
				}
			}
		})
	}
}

// serve runs the handler on an api.Listen socket and returns its path.
func serve(t *testing.T, b Backend) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "agent.sock")
	l, err := Listen(path, WithLogger(testLog()))
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	srv := NewServer(NewHandler(testLog(), b, func(context.Context) (any, error) {
		return map[string]string{"mode": "test"}, nil
	}))
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return path
}

func TestClientRoundTrip(t *testing.T) {
	fb := &fakeBackend{eps: map[Attachment]Endpoint{}}
	path := serve(t, fb)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	dfi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if dfi.Mode().Perm() != 0o700 {
		t.Errorf("socket dir mode %v, want 0700", dfi.Mode().Perm())
	}

	ctx := context.Background()
	c := NewClient(path)
	att := Attachment{ContainerID: "c1", IfName: "eth0"}
	alloc, err := c.Allocate(ctx, AllocateRequest{Attachment: att, PodName: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if alloc.IP != "198.19.1.2" || alloc.Attachment != att {
		t.Fatalf("Allocate = %+v", alloc)
	}
	if _, err := c.GetEndpoint(ctx, att); !IsCode(err, CodeNotFound) {
		t.Fatalf("GetEndpoint(unknown) = %v, want not-found", err)
	}
	ep := Endpoint{Attachment: att, IP: alloc.IP, HostIfName: "glabc", Netns: "/run/netns/x"}
	if err := c.UpsertEndpoint(ctx, ep); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetEndpoint(ctx, att)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ep, got); diff != "" {
		t.Fatalf("GetEndpoint (-want +got):\n%s", diff)
	}
	list, err := c.ListEndpoints(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListEndpoints = %v, %v", list, err)
	}
	if err := c.DeleteEndpoint(ctx, att); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx, att); err != nil {
		t.Fatal(err)
	}
	res, err := c.GC(ctx, GCRequest{Valid: []Attachment{att}})
	if err != nil || len(res.Released) != 1 {
		t.Fatalf("GC = %v, %v", res, err)
	}
	var st map[string]string
	if err := c.Status(ctx, &st); err != nil || st["mode"] != "test" {
		t.Fatalf("Status = %v, %v", st, err)
	}
	if err := c.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
	fb.err = Errorf(CodeExhausted, "no address left")
	err = c.CNIStatus(ctx)
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != CodeExhausted {
		t.Fatalf("CNIStatus = %v, want exhausted", err)
	}
	if errors.Is(err, ErrAgentUnreachable) {
		t.Fatal("an answered error claims the agent is unreachable")
	}
}

func TestClientUnreachable(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "nobody.sock"))
	err := c.CNIStatus(context.Background())
	if !errors.Is(err, ErrAgentUnreachable) {
		t.Fatalf("CNIStatus with no socket = %v, want ErrAgentUnreachable", err)
	}
	var ae *Error
	if errors.As(err, &ae) {
		t.Fatalf("unreachable error is an *Error: %v", err)
	}
}

func TestListenChecks(t *testing.T) {
	t.Run("group writable dir", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o775); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(filepath.Join(dir, "s.sock")); err == nil || !strings.Contains(err.Error(), "writable") {
			t.Fatalf("Listen in a group-writable dir = %v", err)
		}
	})
	t.Run("not owned by root", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to chown")
		}
		dir := t.TempDir()
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(filepath.Join(dir, "s.sock")); err == nil || !strings.Contains(err.Error(), "owned by uid") {
			t.Fatalf("Listen in a non-root dir = %v", err)
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "s.sock")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(p); err == nil {
			t.Fatal("Listen replaced a regular file")
		}
	})
	t.Run("stale socket removed, live one kept", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "s.sock")
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(p); err == nil || !strings.Contains(err.Error(), "another process") {
			t.Fatalf("Listen on a served socket = %v", err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		_ = l.Close()
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("stale socket missing before the test: %v", err)
		}
		l2, err := Listen(p)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		_ = l2.Close()
	})
}

// TestPeerCredRefusal connects from a thread whose effective uid is 65534 and
// checks that the listener closes the connection, while root gets through.
func TestPeerCredRefusal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to change the effective uid of a thread")
	}
	// The socket must be reachable by uid 65534, so not under t.TempDir()
	// (whose top directory is 0700).
	dir, err := os.MkdirTemp("", "glia-peercred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s.sock")
	inner, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
	l := &peerCredListener{Listener: inner, log: testLog(), allowedUID: 0}
	defer l.Close()

	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()

	// Connect as uid 65534 from a locked thread: credentials are per thread
	// in the kernel, and SO_PEERCRED records the effective uid at connect.
	nobodyConn := make(chan net.Conn, 1)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); e != 0 {
			runtime.UnlockOSThread()
			errc <- e
			return
		}
		c, err := net.Dial("unix", path)
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			// Leave the thread locked: it dies with this goroutine.
			errc <- e
			return
		}
		runtime.UnlockOSThread()
		errc <- err
		nobodyConn <- c
	}()
	if err := <-errc; err != nil {
		t.Fatalf("connect as uid 65534: %v", err)
	}
	nc := <-nobodyConn
	defer nc.Close()
	if uid, err := PeerUID(nc); err != nil || uid != 0 {
		// The client side sees the server's (root) credentials.
		t.Fatalf("PeerUID(client side) = %d, %v", uid, err)
	}
	// The listener closes the refused connection: reading sees EOF.
	// The deadline only guards against a hang; a timeout fails the test.
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1)
	if n, err := nc.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("refused connection: read %d bytes, err %v; want EOF", n, err)
	}

	// Root is accepted, and it is the first connection Accept returned.
	rc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	c := <-accepted
	uid, err := PeerUID(c)
	if err != nil || uid != 0 {
		t.Fatalf("accepted connection peer uid = %d, %v", uid, err)
	}
	_ = c.Close()
}

func TestPeerUIDSocketpair(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "a")
	defer f.Close()
	defer syscall.Close(fds[1])
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uid, err := PeerUID(c)
	if err != nil || uid != uint32(os.Geteuid()) {
		t.Fatalf("PeerUID = %d, %v; want %d", uid, err, os.Geteuid())
	}
}
