package noderunner

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The log shim (`glia lab _log-shim`) is to a lab container what conmon is
// to a CRI-O container: the node runner starts one per container run, in a
// session of its own, before the container. It holds the reading ends of
// the container's stdout and stderr (or the master of its terminal) and,
// when the container has stdin, the writing end of its stdin; it writes the
// output to the container's log file in the CRI format and serves attach on
// a unix socket. It outlives a runner restart and exits when the container's
// output is closed (the container and everything that inherited its output
// exited).

// ShimOptions are the log shim's flags. File descriptors are inherited from
// the runner; 0 means none.
type ShimOptions struct {
	LogPath      string
	AttachSocket string
	// TTY: OutFD is a terminal master, which also takes stdin.
	TTY       bool
	StdinOnce bool
	OutFD     int
	ErrFD     int
	InFD      int
	// ReadyFD gets one byte once the log is locked and attach is served.
	ReadyFD int
}

// Args renders o as the shim's command line (after `_log-shim`).
func (o ShimOptions) Args() []string {
	a := []string{"--log", o.LogPath, "--attach", o.AttachSocket}
	if o.TTY {
		a = append(a, "--tty")
	}
	if o.StdinOnce {
		a = append(a, "--stdin-once")
	}
	for _, f := range []struct {
		name string
		fd   int
	}{{"out-fd", o.OutFD}, {"err-fd", o.ErrFD}, {"in-fd", o.InFD}, {"ready-fd", o.ReadyFD}} {
		if f.fd > 0 {
			a = append(a, "--"+f.name, strconv.Itoa(f.fd))
		}
	}
	return a
}

// ParseShimArgs parses the shim's command line.
func ParseShimArgs(args []string) (ShimOptions, error) {
	var o ShimOptions
	fs := flag.NewFlagSet("_log-shim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.LogPath, "log", "", "container log file (CRI format, appended)")
	fs.StringVar(&o.AttachSocket, "attach", "", "unix socket to serve attach on")
	fs.BoolVar(&o.TTY, "tty", false, "the output descriptor is a terminal master that also takes stdin")
	fs.BoolVar(&o.StdinOnce, "stdin-once", false, "close the container's stdin when the first attached client ends its input")
	fs.IntVar(&o.OutFD, "out-fd", 0, "descriptor of the container's stdout (or terminal master)")
	fs.IntVar(&o.ErrFD, "err-fd", 0, "descriptor of the container's stderr")
	fs.IntVar(&o.InFD, "in-fd", 0, "descriptor of the container's stdin (writing end)")
	fs.IntVar(&o.ReadyFD, "ready-fd", 0, "descriptor to write one byte to once ready")
	if err := fs.Parse(args); err != nil {
		return ShimOptions{}, fmt.Errorf("parse _log-shim flags: %w", err)
	}
	if fs.NArg() > 0 {
		return ShimOptions{}, fmt.Errorf("_log-shim takes no arguments (got %q)", fs.Args())
	}
	switch {
	case o.LogPath == "":
		return ShimOptions{}, errors.New("_log-shim: --log is required")
	case o.AttachSocket == "":
		return ShimOptions{}, errors.New("_log-shim: --attach is required")
	case o.OutFD <= 2:
		return ShimOptions{}, errors.New("_log-shim: --out-fd must name an inherited descriptor above 2")
	case o.TTY && (o.ErrFD != 0 || o.InFD != 0):
		return ShimOptions{}, errors.New("_log-shim: with --tty the terminal carries all streams; --err-fd and --in-fd are not used")
	}
	return o, nil
}

// ShimMain runs the log shim until the container's output is closed. When
// it cannot start, the reason is also written to the ready descriptor, for
// the runner to report.
func ShimMain(args []string) error {
	o, err := ParseShimArgs(args)
	if err != nil {
		return err
	}
	s, err := setupShim(o)
	if o.ReadyFD > 0 {
		msg := []byte{1}
		if err != nil {
			msg = []byte(err.Error())
		}
		ready := os.NewFile(uintptr(o.ReadyFD), "ready")
		ready.Write(msg)
		ready.Close()
	}
	if err != nil {
		return err
	}
	return s.run()
}

func setupShim(o ShimOptions) (*shim, error) {
	// The shim outlives the runner and must see the container's output to
	// its end: signals sent to the pod (SIGTERM to its cgroup) are not for
	// it.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	inherited := func(fd int, name string) (*os.File, error) {
		if fd <= 0 {
			return nil, nil
		}
		// Non-blocking, so the Go runtime polls it and a read never
		// ties up a thread.
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, fmt.Errorf("descriptor %d (%s): %w", fd, name, err)
		}
		return os.NewFile(uintptr(fd), name), nil
	}
	out, err := inherited(o.OutFD, "stdout")
	if err != nil {
		return nil, err
	}
	errf, err := inherited(o.ErrFD, "stderr")
	if err != nil {
		return nil, err
	}
	in, err := inherited(o.InFD, "stdin")
	if err != nil {
		return nil, err
	}
	return newShim(o, out, errf, in)
}

type shim struct {
	opts     ShimOptions
	logf     *os.File
	log      *logFile
	ln       *net.UnixListener
	sockIno  uint64
	out, err *os.File

	inMu     sync.Mutex
	in       *os.File // stdin writer, or the terminal master; nil: none
	inClosed bool

	mu      sync.Mutex
	clients map[*attachClient]struct{}
	ended   bool
	writers sync.WaitGroup // one per attached client
}

type attachClient struct {
	conn  net.Conn
	out   chan []byte // frames, encoded
	stdin bool
	once  sync.Once
}

func (c *attachClient) close() { c.once.Do(func() { close(c.out) }) }

func newShim(o ShimOptions, out, errf, in *os.File) (*shim, error) {
	logf, err := os.OpenFile(o.LogPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	// Readers following the log stop once this lock is released.
	if err := unix.Flock(int(logf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		logf.Close()
		return nil, fmt.Errorf("lock container log %s (is another shim writing it?): %w", o.LogPath, err)
	}
	ln, err := listenUnix(o.AttachSocket)
	if err != nil {
		logf.Close()
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(o.AttachSocket, &st); err != nil {
		ln.Close()
		logf.Close()
		return nil, fmt.Errorf("stat %s: %w", o.AttachSocket, err)
	}
	s := &shim{
		opts:    o,
		logf:    logf,
		log:     &logFile{w: logf, now: time.Now},
		ln:      ln,
		sockIno: st.Ino,
		out:     out,
		err:     errf,
		in:      in,
		clients: map[*attachClient]struct{}{},
	}
	if o.TTY {
		s.in = out
	}
	return s, nil
}

// run pumps the output until it ends, serving attach meanwhile.
func (s *shim) run() error {
	go s.serve()
	var wg sync.WaitGroup
	pump := func(f *os.File, stream string, typ byte) {
		defer wg.Done()
		ll := &lineLogger{f: s.log, stream: stream}
		buf := make([]byte, 32*1024)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				ll.Write(buf[:n])
				s.broadcast(typ, buf[:n])
			}
			if err != nil { // EOF; EIO from a terminal whose last user left
				break
			}
		}
		ll.Close()
	}
	wg.Add(1)
	go pump(s.out, streamStdout, frameStdout)
	if s.err != nil {
		wg.Add(1)
		go pump(s.err, streamStderr, frameStderr)
	}
	wg.Wait()
	return s.shutdown()
}

func (s *shim) shutdown() error {
	s.ln.Close()
	s.removeSocket()
	s.mu.Lock()
	s.ended = true
	clients := make([]*attachClient, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
		c.close() // the writer flushes what is queued, then hangs up
	}
	s.mu.Unlock()
	s.inMu.Lock()
	if s.in != nil && !s.inClosed {
		s.in.Close()
		s.inClosed = true
	}
	s.inMu.Unlock()
	// Attached clients get what is queued for them, within a bound.
	deadline := time.Now().Add(2 * time.Second)
	for _, c := range clients {
		c.conn.SetWriteDeadline(deadline)
	}
	s.writers.Wait()
	err := s.log.err
	if cerr := s.logf.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write container log %s: %w", s.opts.LogPath, err)
	}
	return nil
}

// removeSocket removes the attach socket unless a newer shim of the same
// container already replaced it.
func (s *shim) removeSocket() {
	var st unix.Stat_t
	if err := unix.Stat(s.opts.AttachSocket, &st); err == nil && st.Ino == s.sockIno {
		os.Remove(s.opts.AttachSocket)
	}
}

// broadcast queues p for every attached client; a client that cannot keep
// up is dropped rather than slowing the container down.
func (s *shim) broadcast(typ byte, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.clients) == 0 {
		return
	}
	var frame []byte
	for off := 0; off < len(p); off += maxFrame {
		chunk := p[off:min(off+maxFrame, len(p))]
		frame = append(frame, typ, 0, 0, 0, 0)
		putUint32(frame[len(frame)-4:], uint32(len(chunk)))
		frame = append(frame, chunk...)
	}
	for c := range s.clients {
		select {
		case c.out <- frame:
		default:
			delete(s.clients, c)
			c.close()
			c.conn.Close()
		}
	}
}

func putUint32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

func (s *shim) serve() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.handle(conn)
	}
}

func (s *shim) handle(conn net.Conn) {
	typ, p, err := readFrame(conn)
	if err != nil || typ != frameHello || len(p) != 1 {
		conn.Close()
		return
	}
	c := &attachClient{conn: conn, out: make(chan []byte, 256), stdin: p[0] == 1}
	var flags byte
	if s.opts.TTY {
		flags |= 1
	}
	s.inMu.Lock()
	if s.in != nil && !s.inClosed {
		flags |= 2
	}
	s.inMu.Unlock()
	if err := writeFrame(conn, frameWelcome, []byte{flags}); err != nil {
		conn.Close()
		return
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.clients[c] = struct{}{}
	s.writers.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.writers.Done()
		defer conn.Close()
		for frame := range c.out {
			if _, err := conn.Write(frame); err != nil {
				s.drop(c)
				for range c.out {
				}
				return
			}
		}
	}()
	for {
		typ, p, err := readFrame(conn)
		if err != nil {
			break
		}
		switch typ {
		case frameStdin:
			s.writeStdin(p)
		case frameStdinEOF:
			s.stdinEnded(c)
		case frameResize:
			if len(p) == 4 {
				s.resize(uint16(p[0])<<8|uint16(p[1]), uint16(p[2])<<8|uint16(p[3]))
			}
		}
	}
	s.stdinEnded(c)
	s.drop(c)
}

func (s *shim) drop(c *attachClient) {
	s.mu.Lock()
	if _, ok := s.clients[c]; ok {
		delete(s.clients, c)
		c.close()
	}
	s.mu.Unlock()
}

func (s *shim) writeStdin(p []byte) {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.in == nil || s.inClosed {
		return
	}
	s.in.Write(p)
}

// stdinEnded closes the container's stdin when it is stdinOnce and the
// client that ended was sending it (a terminal is never closed: it also
// carries the output).
func (s *shim) stdinEnded(c *attachClient) {
	if !s.opts.StdinOnce || s.opts.TTY || !c.stdin {
		return
	}
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.in != nil && !s.inClosed {
		s.in.Close()
		s.inClosed = true
	}
}

func (s *shim) resize(width, height uint16) {
	if !s.opts.TTY || width == 0 || height == 0 {
		return
	}
	setWinsize(s.out, width, height)
}

// setWinsize sets a terminal's size (through its master); the foreground
// process group gets SIGWINCH.
func setWinsize(f *os.File, width, height uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: height, Col: width})
	}); err != nil {
		return err
	}
	return ierr
}
