package noderunner

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// The attach protocol between the node runner and a container's log shim,
// over the unix socket the shim serves in the pod's directory. Every message
// is a frame: one type byte, a big-endian uint32 length, the payload.
//
//	runner → shim: frameHello (1 byte: 1 when the client sends stdin),
//	               frameStdin (data), frameStdinEOF, frameResize (width,
//	               height as two big-endian uint16)
//	shim → runner: frameWelcome (1 byte: bit 0 tty, bit 1 stdin open),
//	               frameStdout, frameStderr (data)
//
// The shim closes the connection once the container's output ended.
const (
	frameHello    byte = 'h'
	frameWelcome  byte = 'w'
	frameStdin    byte = 'i'
	frameStdinEOF byte = 'c'
	frameResize   byte = 'r'
	frameStdout   byte = 'o'
	frameStderr   byte = 'e'

	maxFrame = 1 << 20
)

// AttachSocketPath is the socket where the log shim of a pod's container
// serves attach.
func AttachSocketPath(podDir, container string) string {
	return filepath.Join(podDir, "attach-"+container+".sock")
}

func writeFrame(w io.Writer, typ byte, payload []byte) error {
	buf := make([]byte, 5+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	_, err := w.Write(buf)
	return err
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("attach frame of %d bytes is too large", n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[0], payload, nil
}

// frameWriter sends every Write as one frame of its type.
type frameWriter struct {
	w   io.Writer
	typ byte
}

func (f frameWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += maxFrame {
		if err := writeFrame(f.w, f.typ, p[off:min(off+maxFrame, len(p))]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// unixPath works around the 108-byte limit of socket paths: a long path is
// reached through /proc/self/fd of its opened directory. The returned
// function closes that directory.
func unixPath(path string) (string, func(), error) {
	if len(path) < 100 {
		return path, func() {}, nil
	}
	dir := filepath.Dir(path)
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open socket directory %s: %w", dir, err)
	}
	short := "/proc/self/fd/" + strconv.Itoa(fd) + "/" + filepath.Base(path)
	if len(short) >= 108 {
		unix.Close(fd)
		return "", nil, fmt.Errorf("socket name %q is too long", filepath.Base(path))
	}
	return short, func() { unix.Close(fd) }, nil
}

func listenUnix(path string) (*net.UnixListener, error) {
	p, done, err := unixPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// The listener must not unlink by the /proc/self/fd name it was bound
	// with; the shim removes the socket itself.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

func dialUnix(path string) (*net.UnixConn, error) {
	p, done, err := unixPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connect to the container's log shim at %s: %w", path, err)
	}
	return c, nil
}

// attachShim connects a client's streams to a container's log shim: it
// sends stdin and terminal sizes and copies the container's output until
// the container's output ends or ctx is cancelled.
func attachShim(ctx context.Context, socket string, s ioStreams) error {
	conn, err := dialUnix(socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var hello byte
	if s.In != nil {
		hello = 1
	}
	if err := writeFrame(conn, frameHello, []byte{hello}); err != nil {
		return fmt.Errorf("attach to log shim: %w", err)
	}
	if typ, p, err := readFrame(conn); err != nil || typ != frameWelcome || len(p) != 1 {
		return fmt.Errorf("attach to log shim at %s: no welcome (%v)", socket, err)
	}
	var wmu sync.Mutex
	send := func(typ byte, payload []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return writeFrame(conn, typ, payload)
	}
	if s.In != nil {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := s.In.Read(buf)
				if n > 0 {
					if send(frameStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					if errors.Is(err, io.EOF) {
						send(frameStdinEOF, nil)
					}
					return
				}
			}
		}()
	}
	if s.Resize != nil {
		go func() {
			for sz := range s.Resize {
				p := make([]byte, 4)
				binary.BigEndian.PutUint16(p[0:], sz.Width)
				binary.BigEndian.PutUint16(p[2:], sz.Height)
				if send(frameResize, p) != nil {
					return
				}
			}
		}()
	}
	for {
		typ, p, err := readFrame(conn)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return fmt.Errorf("attach: read from log shim: %w", err)
		}
		var dst io.Writer
		switch typ {
		case frameStdout:
			dst = s.Out
		case frameStderr:
			dst = s.Err
		}
		if dst == nil {
			continue
		}
		if _, err := dst.Write(p); err != nil {
			return nil // the client went away
		}
	}
}
