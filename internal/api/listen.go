package api

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ListenOption changes how Listen behaves.
type ListenOption func(*listenConfig)

type listenConfig struct {
	log *slog.Logger
}

// WithLogger makes the listener log refused connections to log.
func WithLogger(log *slog.Logger) ListenOption {
	return func(c *listenConfig) { c.log = log }
}

// Listen listens on the unix socket at path for the agent's API.
//
// The parent directory is created with mode 0700 when missing; an existing
// one must be a directory owned by root and not writable by group or others,
// since whoever can write it could replace the socket. A stale socket left by
// a previous run is removed; a socket another process still serves is not.
// The socket is made 0600, and connections from peers whose uid is not 0
// (read with SO_PEERCRED) are closed on accept.
func Listen(path string, opts ...ListenOption) (net.Listener, error) {
	cfg := listenConfig{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, o := range opts {
		o(&cfg)
	}
	if path == "" {
		return nil, errors.New("api socket path is empty")
	}
	dir := filepath.Dir(path)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create socket directory: %w", err)
		}
	}
	if err := checkSocketDir(dir); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	return &peerCredListener{Listener: l, log: cfg.log, allowedUID: 0}, nil
}

func checkSocketDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory (symlinks are refused)", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("socket directory %s: cannot read its owner", dir)
	}
	if st.Uid != 0 {
		return fmt.Errorf("socket directory %s is owned by uid %d, not root: chown root it or choose another socket path", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("socket directory %s has mode %v, writable by group or others: chmod go-w it or choose another socket path", dir, fi.Mode().Perm())
	}
	return nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket: remove it or choose another socket path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return fmt.Errorf("socket %s is served by another process: is another agent running on this node?", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// PeerUID returns the uid of the process at the other end of a unix socket
// connection, as the kernel recorded it at connect time (SO_PEERCRED).
func PeerUID(c net.Conn) (uint32, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("connection %T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	var (
		cred *unix.Ucred
		cerr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return 0, fmt.Errorf("peer credentials: %w", cerr)
	}
	return cred.Uid, nil
}

// peerCredListener closes, on accept, connections whose peer uid is not
// allowedUID.
type peerCredListener struct {
	net.Listener
	log        *slog.Logger
	allowedUID uint32
}

func (l *peerCredListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := PeerUID(c)
		if err == nil && uid == l.allowedUID {
			return c, nil
		}
		if err != nil {
			l.log.Warn("refused api connection: cannot read peer credentials", "error", err)
		} else {
			l.log.Warn("refused api connection from a non-root peer", "uid", uid, "allowedUID", l.allowedUID)
		}
		_ = c.Close()
	}
}
