package noderunner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Container logs are kept in the CRI log format, one entry per line:
//
//	2026-05-04T10:11:12.123456789Z stdout F a complete line
//	2026-05-04T10:11:12.223456789Z stderr P the first 16 KiB of a long line
//
// (time of reading, stream, tag: F for a full line, P for a part of a
// longer one; the content has no trailing newline). The log shim writes
// them; the kubelet API's /containerLogs reads them.

const (
	streamStdout = "stdout"
	streamStderr = "stderr"
	tagFull      = "F"
	tagPartial   = "P"
	// maxLogLine is the longest content of one entry; a longer line is
	// split into P entries (containerd's default size).
	maxLogLine = 16 * 1024
)

// PreviousLogPath is where the log of a container's previous run is kept
// once it restarted (one previous run is kept, as the kubelet does).
func PreviousLogPath(logPath string) string { return logPath + ".previous" }

// logEntry is one parsed line of a CRI log.
type logEntry struct {
	ts      time.Time
	stream  string
	partial bool
	content []byte
}

// appendLogEntry formats one entry (with its newline) onto buf.
func appendLogEntry(buf []byte, ts time.Time, stream string, partial bool, content []byte) []byte {
	buf = ts.UTC().AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	tag := tagFull
	if partial {
		tag = tagPartial
	}
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, content...)
	return append(buf, '\n')
}

// parseLogLine parses one line of a CRI log (without its newline).
func parseLogLine(line []byte) (logEntry, error) {
	var e logEntry
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return e, fmt.Errorf("log line %q has no stream", line)
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return e, fmt.Errorf("log line timestamp: %w", err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return e, fmt.Errorf("log line %q has no tag", line)
	}
	switch s := string(stream); s {
	case streamStdout, streamStderr:
		e.stream = s
	default:
		return e, fmt.Errorf("log line stream %q is neither stdout nor stderr", s)
	}
	tags, content, _ := bytes.Cut(rest, []byte{' '})
	// Tags are ':'-separated; the first says full or partial.
	first, _, _ := bytes.Cut(tags, []byte{':'})
	switch string(first) {
	case tagFull:
	case tagPartial:
		e.partial = true
	default:
		return e, fmt.Errorf("log line tag %q is neither F nor P", tags)
	}
	e.ts, e.content = t, content
	return e, nil
}

// logFile writes CRI log entries to one file; lines of stdout and stderr
// are written whole, one write each.
type logFile struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
	buf []byte
	err error
}

func (l *logFile) write(stream string, partial bool, content []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = appendLogEntry(l.buf[:0], l.now(), stream, partial, content)
	if _, err := l.w.Write(l.buf); err != nil && l.err == nil {
		l.err = err
	}
}

// lineLogger splits one stream's output into log entries: a full line per
// newline (a trailing carriage return dropped), a partial entry per
// maxLogLine bytes of a longer line, and whatever is left at Close as a
// last full entry.
type lineLogger struct {
	f       *logFile
	stream  string
	pending []byte
}

func (s *lineLogger) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg = p[:i]
		}
		s.pending = append(s.pending, seg...)
		p = p[len(seg):]
		// As containerd does: a line of maxLogLine or more bytes goes
		// out in P entries of maxLogLine, its rest in the F entry.
		for len(s.pending) >= maxLogLine {
			s.f.write(s.stream, true, s.pending[:maxLogLine])
			s.pending = append(s.pending[:0], s.pending[maxLogLine:]...)
		}
		if i >= 0 {
			p = p[1:]
			s.emitFull()
		}
	}
	return n, nil
}

func (s *lineLogger) emitFull() {
	s.f.write(s.stream, false, bytes.TrimSuffix(s.pending, []byte{'\r'}))
	s.pending = s.pending[:0]
}

// Close logs a last line that had no newline.
func (s *lineLogger) Close() error {
	if len(s.pending) > 0 {
		s.emitFull()
	}
	return nil
}

// logReadOptions say what part of a container log to return, with the
// kubelet's semantics.
type logReadOptions struct {
	// Since drops entries older than it (zero: keep all).
	Since time.Time
	// TailLines starts this many lines before the end (nil: from the start).
	TailLines *int64
	// LimitBytes stops after this many bytes of output (nil: no limit).
	LimitBytes *int64
	// Timestamps prefixes each line with its RFC 3339 time.
	Timestamps bool
	// Stdout and Stderr select the streams.
	Stdout, Stderr bool
	// Follow keeps reading until the writer is done (see Running).
	Follow bool
	// Running reports whether the container run that writes this log is
	// still running; following ends a moment after it stops even when its
	// log shim lingers (a child holding its output open). Nil: only the
	// shim's end stops following.
	Running func() bool
	// PollInterval bounds how long following waits before re-checking
	// (default 250ms).
	PollInterval time.Duration
}

// errLimitReached ends reading once LimitBytes were written.
var errLimitReached = errors.New("log byte limit reached")

type limitWriter struct {
	w      io.Writer
	remain int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.remain <= 0 {
		return 0, errLimitReached
	}
	short := false
	if int64(len(p)) > l.remain {
		p, short = p[:l.remain], true
	}
	n, err := l.w.Write(p)
	l.remain -= int64(n)
	if err == nil && (short || l.remain <= 0) {
		err = errLimitReached
	}
	return n, err
}

// tailOffset returns the offset where the last n lines of f begin.
func tailOffset(f *os.File, n int64) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if n <= 0 || size == 0 {
		return size, nil
	}
	const block = 32 * 1024
	buf := make([]byte, block)
	end := size
	// A newline at the very end closes the last line; it does not start one.
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		end--
	}
	var seen int64
	for end > 0 {
		start := max(end-block, 0)
		chunk := buf[:end-start]
		if _, err := f.ReadAt(chunk, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] == '\n' {
				seen++
				if seen == n {
					return start + int64(i) + 1, nil
				}
			}
		}
		end = start
	}
	return 0, nil
}

// writerDone reports whether no log shim holds the log file any more: the
// shim keeps an exclusive flock on the file while it writes.
func writerDone(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	done := true
	rc.Control(func(fd uintptr) {
		if err := unix.Flock(int(fd), unix.LOCK_SH|unix.LOCK_NB); err != nil {
			done = !errors.Is(err, unix.EWOULDBLOCK)
			return
		}
		unix.Flock(int(fd), unix.LOCK_UN)
	})
	return done
}

// readLog writes the container log at path to w as opts say. Unparsable
// lines are skipped, as the kubelet does.
func readLog(ctx context.Context, path string, opts logReadOptions, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open container log: %w", err)
	}
	defer f.Close()
	if opts.TailLines != nil {
		off, err := tailOffset(f, *opts.TailLines)
		if err != nil {
			return fmt.Errorf("find log tail: %w", err)
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("seek container log: %w", err)
		}
	}
	if opts.LimitBytes != nil {
		w = &limitWriter{w: w, remain: *opts.LimitBytes}
	}
	var watch *fileWatch
	if opts.Follow {
		if watch, err = newFileWatch(path); err != nil {
			return err
		}
		defer watch.Close()
	}
	poll := opts.PollInterval
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}

	lineStart := map[string]bool{streamStdout: true, streamStderr: true}
	var out []byte
	emit := func(line []byte) error {
		e, err := parseLogLine(line)
		if err != nil {
			return nil
		}
		if e.stream == streamStdout && !opts.Stdout || e.stream == streamStderr && !opts.Stderr {
			return nil
		}
		if !opts.Since.IsZero() && e.ts.Before(opts.Since) {
			return nil
		}
		out = out[:0]
		if opts.Timestamps && lineStart[e.stream] {
			out = e.ts.AppendFormat(out, time.RFC3339Nano)
			out = append(out, ' ')
		}
		out = append(out, e.content...)
		if !e.partial {
			out = append(out, '\n')
		}
		lineStart[e.stream] = !e.partial
		_, err = w.Write(out)
		return err
	}

	r := bufio.NewReaderSize(f, 64*1024)
	var pending []byte
	var stoppedAt time.Time
	for {
		// Everything written so far.
		for {
			b, err := r.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				pending = append(pending, b...)
				continue
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read container log: %w", err)
			}
			if err != nil { // EOF: keep a line not yet finished
				pending = append(pending, b...)
				break
			}
			line := b[:len(b)-1]
			if len(pending) > 0 {
				line = append(pending, line...)
				pending = pending[:0]
			}
			if err := emit(line); err != nil {
				if errors.Is(err, errLimitReached) {
					return nil
				}
				return err
			}
		}
		if !opts.Follow {
			break
		}
		if writerDone(f) {
			// The shim finished; what it wrote before releasing the
			// lock is all there is. Read once more to be sure.
			if n, _ := r.Peek(1); len(n) > 0 {
				continue
			}
			break
		}
		if opts.Running != nil && !opts.Running() {
			if stoppedAt.IsZero() {
				stoppedAt = time.Now()
			} else if time.Since(stoppedAt) > 2*time.Second {
				break
			}
		}
		if err := watch.Wait(ctx, poll); err != nil {
			return nil // the client went away
		}
	}
	if len(pending) > 0 {
		if err := emit(pending); err != nil && !errors.Is(err, errLimitReached) {
			return err
		}
	}
	return nil
}

// fileWatch wakes a follower when a file is written to.
type fileWatch struct {
	fd int
}

func newFileWatch(path string) (*fileWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY|unix.IN_CLOSE_WRITE|unix.IN_ATTRIB|unix.IN_MOVE_SELF|unix.IN_DELETE_SELF); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	return &fileWatch{fd: fd}, nil
}

// Wait returns when the file changed, d passed, or ctx ended (an error).
func (w *fileWatch) Wait(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, int(d/time.Millisecond)); err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("poll inotify: %w", err)
	}
	// Drain the events; which ones does not matter.
	var buf [4096]byte
	for {
		if n, err := unix.Read(w.fd, buf[:]); n <= 0 || err != nil {
			break
		}
	}
	return ctx.Err()
}

func (w *fileWatch) Close() error { return unix.Close(w.fd) }
