package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// dialAsUID connects to a unix socket from a thread whose effective uid is
// uid, as an unprivileged user on the node would.
func dialAsUID(path string, uid int) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			runtime.UnlockOSThread()
			ch <- res{err: e}
			return
		}
		c, err := net.Dial("unix", path)
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			// Leave the thread locked: it dies with this goroutine.
			ch <- res{c, errors.Join(err, e)}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// TestPrivilegedAPISocket checks the agent socket as Listen makes it: 0600,
// owned by root, in a directory only root may write; an unprivileged user
// cannot connect, and cannot either when the socket's mode is opened up by
// mistake (the peer credentials are checked on accept).
func TestPrivilegedAPISocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: checks ownership and changes a thread's uid")
	}
	// Reachable by uid 65534 up to the socket itself (t.TempDir is 0700).
	base, err := os.MkdirTemp("", "glia-api-socket-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "glia.sock")
	l, err := Listen(path, WithLogger(testLog()))
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(NewHandler(testLog(), &fakeBackend{eps: map[Attachment]Endpoint{}}, nil))
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close(); _ = l.Close() })

	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 || st.Uid != 0 {
		t.Fatalf("socket mode %v uid %d, want a 0600 socket owned by root", fi.Mode(), st.Uid)
	}
	dfi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if dfi.Mode().Perm()&0o022 != 0 || dfi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("socket directory mode %v, want root-owned and not writable by others", dfi.Mode())
	}

	// uid 65534 is refused by the file mode.
	if c, err := dialAsUID(path, 65534); err == nil {
		_ = c.Close()
		t.Fatal("uid 65534 connected to a 0600 socket")
	} else if !errors.Is(err, syscall.EACCES) {
		t.Fatalf("connect as uid 65534 = %v, want EACCES", err)
	}
	// With the mode opened up, the peer credential check still refuses.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	c, err := dialAsUID(path, 65534)
	if err != nil {
		t.Fatalf("connect as uid 65534 to a 0666 socket: %v", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET "+PathHealthz+" HTTP/1.1\r\nHost: glia-agent\r\n\r\n"); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	// The deadline only guards against a hang; reaching it fails the test.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err == nil || n != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unprivileged peer read %q, %v; want the connection closed unanswered", buf[:n], err)
	}
	// Root still gets answers.
	if err := NewClient(path).Healthz(context.Background()); err != nil {
		t.Fatalf("root Healthz: %v", err)
	}
}

// TestBodyLimitOverSocket streams a body with no Content-Length, larger than
// MaxRequestBytes, over the real socket: the agent answers 413 after reading
// at most a little more than the limit.
func TestBodyLimitOverSocket(t *testing.T) {
	path := serve(t, &fakeBackend{eps: map[Attachment]Endpoint{}})
	body := &countingReader{r: io.MultiReader(strings.NewReader(`{"containerID":"`), endlessA{})}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPost, "http://glia-agent"+PathIPAM, io.LimitReader(body, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1 // chunked: the server cannot know the size up front
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		// The server may close the connection while the client still
		// writes; what it read is what counts.
		t.Logf("request ended with %v", err)
	} else {
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", resp.StatusCode)
		}
	}
	// The limit plus what socket buffers hold, far from the 64 MiB offered.
	if n := body.n.Load(); n >= 4<<20 {
		t.Fatalf("%d bytes of the body were consumed", n)
	}
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// endlessA yields 'a' forever.
type endlessA struct{}

func (endlessA) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}
