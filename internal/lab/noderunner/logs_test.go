package noderunner

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"k8s.io/utils/ptr"
)

// logText returns a CRI log's content as the container wrote it (both
// streams, no timestamps).
func logText(path string) ([]byte, error) {
	var b bytes.Buffer
	err := readLog(context.Background(), path, logReadOptions{Stdout: true, Stderr: true}, &b)
	return b.Bytes(), err
}

var t0 = time.Date(2026, 5, 4, 10, 11, 12, 123456789, time.UTC)

func TestLogEntryRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		stream  string
		partial bool
		content string
		line    string
	}{
		{"full stdout", streamStdout, false, "hello world", "2026-05-04T10:11:12.123456789Z stdout F hello world"},
		{"partial stderr", streamStderr, true, "part", "2026-05-04T10:11:12.123456789Z stderr P part"},
		{"empty line", streamStdout, false, "", "2026-05-04T10:11:12.123456789Z stdout F "},
		{"spaces kept", streamStdout, false, "  a  b ", "2026-05-04T10:11:12.123456789Z stdout F   a  b "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendLogEntry(nil, t0, tt.stream, tt.partial, []byte(tt.content))
			if string(got) != tt.line+"\n" {
				t.Fatalf("appendLogEntry = %q, want %q", got, tt.line+"\n")
			}
			e, err := parseLogLine([]byte(tt.line))
			if err != nil {
				t.Fatal(err)
			}
			if !e.ts.Equal(t0) || e.stream != tt.stream || e.partial != tt.partial || string(e.content) != tt.content {
				t.Errorf("parseLogLine = %+v", e)
			}
		})
	}
	// A time in another zone is written in UTC.
	got := appendLogEntry(nil, t0.In(time.FixedZone("x", 3600)), streamStdout, false, []byte("x"))
	if !strings.HasPrefix(string(got), "2026-05-04T10:11:12.123456789Z ") {
		t.Errorf("time not written in UTC: %q", got)
	}
}

func TestParseLogLineErrors(t *testing.T) {
	for _, line := range []string{
		"",
		"garbage",
		"2026-05-04T10:11:12Z stdout",
		"yesterday stdout F x",
		"2026-05-04T10:11:12Z stdin F x",
		"2026-05-04T10:11:12Z stdout X x",
	} {
		if e, err := parseLogLine([]byte(line)); err == nil {
			t.Errorf("parseLogLine(%q) = %+v, want an error", line, e)
		}
	}
	// An entry without content (tag at the end of the line) is an empty line.
	e, err := parseLogLine([]byte("2026-05-04T10:11:12Z stdout F"))
	if err != nil || len(e.content) != 0 || e.partial {
		t.Errorf("tag-only line = %+v, %v", e, err)
	}
	// Further tags after ':' are allowed.
	if e, err := parseLogLine([]byte("2026-05-04T10:11:12Z stdout P:x y")); err != nil || !e.partial || string(e.content) != "y" {
		t.Errorf("multi-tag line = %+v, %v", e, err)
	}
}

type logged struct {
	stream  string
	partial bool
	content string
}

func parseAll(t *testing.T, b []byte) []logged {
	t.Helper()
	var out []logged
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l == "" {
			continue
		}
		if !strings.HasSuffix(l, "\n") {
			t.Fatalf("entry without newline: %q", l)
		}
		e, err := parseLogLine([]byte(strings.TrimSuffix(l, "\n")))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, logged{e.stream, e.partial, string(e.content)})
	}
	return out
}

func TestLineLogger(t *testing.T) {
	long := strings.Repeat("x", maxLogLine)
	tests := []struct {
		name   string
		writes []string
		want   []logged
	}{
		{"lines in one write", []string{"a\nb\n"}, []logged{{"stdout", false, "a"}, {"stdout", false, "b"}}},
		{"line across writes", []string{"he", "llo", "\nwor", "ld\n"}, []logged{{"stdout", false, "hello"}, {"stdout", false, "world"}}},
		{"carriage return dropped", []string{"a\r\nb\r\n"}, []logged{{"stdout", false, "a"}, {"stdout", false, "b"}}},
		{"empty lines", []string{"\n\n"}, []logged{{"stdout", false, ""}, {"stdout", false, ""}}},
		{"last line without newline", []string{"a\nunfinished"}, []logged{{"stdout", false, "a"}, {"stdout", false, "unfinished"}}},
		{"long line split", []string{long + "yz\n"}, []logged{{"stdout", true, long}, {"stdout", false, "yz"}}},
		{"exactly max", []string{long, "\n"}, []logged{{"stdout", true, long}, {"stdout", false, ""}}},
		{"exactly max in one write", []string{long + "\n"}, []logged{{"stdout", true, long}, {"stdout", false, ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			lf := &logFile{w: &buf, now: func() time.Time { return t0 }}
			ll := &lineLogger{f: lf, stream: streamStdout}
			for _, w := range tt.writes {
				if n, err := ll.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			ll.Close()
			if diff := cmp.Diff(tt.want, parseAll(t, buf.Bytes()), cmp.AllowUnexported(logged{})); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

// writeTestLog writes entries one second apart from t0.
func writeTestLog(t *testing.T, entries []logged) string {
	t.Helper()
	var b []byte
	for i, e := range entries {
		b = appendLogEntry(b, t0.Add(time.Duration(i)*time.Second), e.stream, e.partial, []byte(e.content))
	}
	path := filepath.Join(t.TempDir(), "c.log")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadLogOptions(t *testing.T) {
	path := writeTestLog(t, []logged{
		{"stdout", false, "one"},      // t0
		{"stderr", false, "err two"},  // t0+1s
		{"stdout", true, "thr"},       // t0+2s
		{"stdout", false, "ee"},       // t0+3s
		{"stderr", false, "err four"}, // t0+4s
		{"stdout", false, "five"},     // t0+5s
	})
	ts := func(sec int) string { return t0.Add(time.Duration(sec) * time.Second).Format(time.RFC3339Nano) }
	tests := []struct {
		name string
		opts logReadOptions
		want string
	}{
		{"all", logReadOptions{Stdout: true, Stderr: true}, "one\nerr two\nthree\nerr four\nfive\n"},
		{"stdout only", logReadOptions{Stdout: true}, "one\nthree\nfive\n"},
		{"stderr only", logReadOptions{Stderr: true}, "err two\nerr four\n"},
		{"timestamps once per line", logReadOptions{Stdout: true, Stderr: true, Timestamps: true},
			ts(0) + " one\n" + ts(1) + " err two\n" + ts(2) + " three\n" + ts(4) + " err four\n" + ts(5) + " five\n"},
		{"since drops older", logReadOptions{Stdout: true, Stderr: true, Since: t0.Add(3 * time.Second)}, "ee\nerr four\nfive\n"},
		{"since exact time kept", logReadOptions{Stdout: true, Stderr: true, Since: t0.Add(4 * time.Second)}, "err four\nfive\n"},
		{"since after all", logReadOptions{Stdout: true, Stderr: true, Since: t0.Add(time.Hour)}, ""},
		{"tail 2", logReadOptions{Stdout: true, Stderr: true, TailLines: ptr.To[int64](2)}, "err four\nfive\n"},
		{"tail 0", logReadOptions{Stdout: true, Stderr: true, TailLines: ptr.To[int64](0)}, ""},
		{"tail more than there is", logReadOptions{Stdout: true, Stderr: true, TailLines: ptr.To[int64](100)}, "one\nerr two\nthree\nerr four\nfive\n"},
		{"tail and since", logReadOptions{Stdout: true, Stderr: true, TailLines: ptr.To[int64](3), Since: t0.Add(5 * time.Second)}, "five\n"},
		{"limit cuts mid line", logReadOptions{Stdout: true, Stderr: true, LimitBytes: ptr.To[int64](6)}, "one\ner"},
		{"limit exact", logReadOptions{Stdout: true, Stderr: true, LimitBytes: ptr.To[int64](4)}, "one\n"},
		{"limit counts timestamps", logReadOptions{Stdout: true, Timestamps: true, LimitBytes: ptr.To[int64](int64(len(ts(0))) + 3)}, ts(0) + " on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := readLog(t.Context(), path, tt.opts, &b); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, b.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadLogSkipsGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	b := appendLogEntry(nil, t0, streamStdout, false, []byte("good"))
	b = append(b, "not a log line\n"...)
	b = appendLogEntry(b, t0, streamStdout, false, []byte("also good"))
	os.WriteFile(path, b, 0o600)
	got, err := logText(path)
	if err != nil || string(got) != "good\nalso good\n" {
		t.Errorf("logText = %q, %v", got, err)
	}
	if _, err := logText(filepath.Join(t.TempDir(), "missing.log")); err == nil {
		t.Error("reading a missing log succeeded")
	}
}

func TestTailOffset(t *testing.T) {
	tests := []struct {
		content string
		n       int64
		want    int64
	}{
		{"", 3, 0},
		{"a\nb\nc\n", 1, 4},
		{"a\nb\nc\n", 2, 2},
		{"a\nb\nc\n", 3, 0},
		{"a\nb\nc\n", 9, 0},
		{"a\nb\nc", 1, 4}, // last line unfinished
		{"a\nb\nc\n", 0, 6},
		{strings.Repeat("x", 70000) + "\n" + "y\n", 1, 70001}, // across read blocks
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "f")
		os.WriteFile(path, []byte(tt.content), 0o600)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tailOffset(f, tt.n)
		f.Close()
		if err != nil || got != tt.want {
			t.Errorf("tailOffset(%.10q…, %d) = %d, %v; want %d", tt.content, tt.n, got, err, tt.want)
		}
	}
}

// TestReadLogFollow follows a log while a writer holding the shim's lock
// appends to it, and ends when the writer releases the lock.
func TestReadLogFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(w.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	lf := &logFile{w: w, now: time.Now}
	lf.write(streamStdout, false, []byte("before"))

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- readLog(t.Context(), path, logReadOptions{Stdout: true, Stderr: true, Follow: true, PollInterval: 50 * time.Millisecond}, pw)
		pw.Close()
	}()
	got := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 1024)
		for {
			n, err := pr.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				got <- b.String()
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("follow ended while the writer holds the log: %v", err)
	default:
	}
	// A line written in two pieces arrives whole.
	w.Write([]byte(t0.Format(time.RFC3339Nano) + " stdout F hal"))
	time.Sleep(100 * time.Millisecond)
	w.Write([]byte("f a line\n"))
	lf.write(streamStderr, false, []byte("after"))
	time.Sleep(100 * time.Millisecond)
	w.Close() // releases the lock: the shim is done
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end after the writer finished")
	}
	if s := <-got; s != "before\nhalf a line\nafter\n" {
		t.Errorf("followed %q", s)
	}
}

// TestReadLogFollowEndsWhenContainerStops: a shim kept alive by a lingering
// child does not keep a follower waiting once the container stopped.
func TestReadLogFollowEndsWhenContainerStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	unix.Flock(int(w.Fd()), unix.LOCK_EX)
	(&logFile{w: w, now: time.Now}).write(streamStdout, false, []byte("last words"))
	var b bytes.Buffer
	start := time.Now()
	err = readLog(t.Context(), path, logReadOptions{Stdout: true, Follow: true, PollInterval: 50 * time.Millisecond,
		Running: func() bool { return false }}, &b)
	if err != nil || b.String() != "last words\n" {
		t.Errorf("readLog = %q, %v", b.String(), err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("follow took %s to end after the container stopped", d)
	}
	// A cancelled request ends following too.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := readLog(ctx, path, logReadOptions{Stdout: true, Follow: true, Running: func() bool { return true }}, &b); err != nil {
		t.Errorf("cancelled follow: %v", err)
	}
}
