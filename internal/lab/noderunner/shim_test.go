package noderunner

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"glia.dev/glia/internal/lab/podinit"
)

func TestShimArgsRoundTrip(t *testing.T) {
	tests := []ShimOptions{
		{LogPath: "/l/c.log", AttachSocket: "/p/attach-c.sock", OutFD: 3, ErrFD: 4, ReadyFD: 5},
		{LogPath: "/l/c.log", AttachSocket: "/p/a.sock", OutFD: 3, ErrFD: 4, InFD: 5, ReadyFD: 6, StdinOnce: true},
		{LogPath: "/l/c.log", AttachSocket: "/p/a.sock", TTY: true, StdinOnce: true, OutFD: 3, ReadyFD: 4},
	}
	for _, o := range tests {
		got, err := ParseShimArgs(o.Args())
		if err != nil {
			t.Fatalf("ParseShimArgs(%q): %v", o.Args(), err)
		}
		if diff := cmp.Diff(o, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestShimArgsErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--attach", "/s", "--out-fd", "3"}, "--log is required"},
		{[]string{"--log", "/l", "--out-fd", "3"}, "--attach is required"},
		{[]string{"--log", "/l", "--attach", "/s"}, "--out-fd"},
		{[]string{"--log", "/l", "--attach", "/s", "--out-fd", "1"}, "--out-fd"},
		{[]string{"--log", "/l", "--attach", "/s", "--out-fd", "3", "--tty", "--err-fd", "4"}, "with --tty"},
		{[]string{"--log", "/l", "--attach", "/s", "--out-fd", "3", "extra"}, "takes no arguments"},
		{[]string{"--bogus"}, "parse _log-shim flags"},
	}
	for _, tt := range tests {
		if _, err := ParseShimArgs(tt.args); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseShimArgs(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	big := bytes.Repeat([]byte("z"), maxFrame+10)
	frameWriter{&b, frameStdout}.Write(big)
	writeFrame(&b, frameResize, []byte{0, 80, 0, 24})
	writeFrame(&b, frameStdinEOF, nil)
	var got []byte
	for range 2 {
		typ, p, err := readFrame(&b)
		if err != nil || typ != frameStdout {
			t.Fatalf("frame %c, %v", typ, err)
		}
		got = append(got, p...)
	}
	if !bytes.Equal(got, big) {
		t.Errorf("a write larger than a frame came back as %d bytes, want %d", len(got), len(big))
	}
	if typ, p, err := readFrame(&b); err != nil || typ != frameResize || !bytes.Equal(p, []byte{0, 80, 0, 24}) {
		t.Errorf("resize frame %c %v %v", typ, p, err)
	}
	if typ, p, err := readFrame(&b); err != nil || typ != frameStdinEOF || len(p) != 0 {
		t.Errorf("EOF frame %c %v %v", typ, p, err)
	}
	if _, _, err := readFrame(&b); err != io.EOF {
		t.Errorf("reading past the end: %v", err)
	}
	// A length beyond the limit is refused before allocating.
	if _, _, err := readFrame(bytes.NewReader([]byte{frameStdin, 0xff, 0xff, 0xff, 0xff})); err == nil {
		t.Error("accepted a 4 GiB frame")
	}
}

// TestUnixSocketLongPath: attach sockets in deep pod directories work past
// the 108-byte limit of socket addresses.
func TestUnixSocketLongPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := AttachSocketPath(dir, "a-container-name-that-is-long")
	if len(path) < 108 {
		t.Fatalf("test path %d bytes long; want more than 108", len(path))
	}
	ln, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if st, err := os.Stat(path); err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket at %s: %v %v", path, st, err)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := dialUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hi" {
		t.Errorf("read %q over the socket", b)
	}
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("closing the listener removed the socket (the shim removes it itself): %v", err)
	}
}

func TestRotateLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	write(path, "run 1")
	if moved, err := rotateLog(path, true); err != nil || !moved {
		t.Fatalf("rotate on restart: %v %v", moved, err)
	}
	if read(PreviousLogPath(path)) != "run 1" {
		t.Errorf("previous = %q", read(PreviousLogPath(path)))
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("current log still there: %v", err)
	}
	write(path, "run 2")
	if moved, err := rotateLog(path, true); err != nil || !moved {
		t.Fatalf("second rotation: %v %v", moved, err)
	}
	if read(PreviousLogPath(path)) != "run 2" || read(olderLogPath(path)) != "run 1" {
		t.Errorf("previous %q, older %q", read(PreviousLogPath(path)), read(olderLogPath(path)))
	}
	(&containerStdio{logPath: path, rotated: true}).finishRotation(true)
	if _, err := os.Stat(olderLogPath(path)); !os.IsNotExist(err) {
		t.Errorf("the older log outlived a started run: %v", err)
	}
	// A restart without a current log keeps the previous one.
	if moved, err := rotateLog(path, true); err != nil || moved || read(PreviousLogPath(path)) != "run 2" {
		t.Errorf("rotate without a current log: %v %v, previous %q", moved, err, read(PreviousLogPath(path)))
	}
	// A first run removes both.
	write(path, "old pod")
	write(olderLogPath(path), "left by a crash")
	if _, err := rotateLog(path, false); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, PreviousLogPath(path), olderLogPath(path)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived a first run: %v", p, err)
		}
	}
}

// TestSpawnFailureKeepsPreviousLog: a restart whose container does not
// start leaves the last real run as the previous log, and its log shim
// goes away.
func TestSpawnFailureKeepsPreviousLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	entry := string(appendLogEntry(nil, t0, streamStdout, false, []byte("the run that crashed")))
	os.WriteFile(path, []byte(entry), 0o600)
	os.WriteFile(PreviousLogPath(path), []byte("an older run\n"), 0o600)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Spawn(SpawnSpec{
		SelfExe:   self,
		NetNSPath: filepath.Join(dir, "no-such-netns"),
		Init:      podinit.Options{Argv: []string{"true"}},
		IO:        ContainerIO{LogPath: path, Restart: true, AttachSocket: AttachSocketPath(dir, "c")},
	})
	if err == nil {
		t.Fatal("Spawn into a missing network namespace succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != entry {
		t.Errorf("current log %q, want the crashed run back", b)
	}
	if b, _ := os.ReadFile(PreviousLogPath(path)); string(b) != "an older run\n" {
		t.Errorf("previous log %q", b)
	}
	eventually(t, "log shim gone", func() (bool, error) {
		_, err := os.Stat(AttachSocketPath(dir, "c"))
		return os.IsNotExist(err), nil
	})
}
