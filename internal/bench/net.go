package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Ports of the servers glia bench runs inside pods' network namespaces.
const (
	portConn   = 9000 // answers one line with its name, then closes
	portRR     = 9001 // echoes every byte (request/response)
	portStream = 9002 // reads and discards (throughput)
)

// netnsDo runs f on a locked thread inside the network namespace at path
// (/proc/PID/ns/net or /var/run/netns/NAME). Sockets f creates stay in it.
func netnsDo(path string, f func() error) error {
	n, err := ns.GetNS(path)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", path, err)
	}
	defer n.Close()
	return n.Do(func(ns.NetNS) error { return f() })
}

// servers are the listeners of one pod.
type servers struct {
	name string
	lns  []net.Listener
	wg   sync.WaitGroup
}

// startServers listens on the three bench ports inside the network
// namespace at nsPath; connections are served until Close.
func startServers(nsPath, name string) (*servers, error) {
	s := &servers{name: name}
	err := netnsDo(nsPath, func() error {
		for _, port := range []int{portConn, portRR, portStream} {
			ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			s.lns = append(s.lns, ln)
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("servers in %s: %w", name, err)
	}
	for i, h := range []func(net.Conn){s.serveConn, serveRR, serveStream} {
		ln, h := s.lns[i], h
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); h(c) }()
			}
		}()
	}
	return s, nil
}

// serveConn answers a request with its name and waits for the client to
// close: the client closes first, so no TIME-WAIT is left here to refuse
// a later connection from the same client port.
func (s *servers) serveConn(c net.Conn) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		return
	}
	if _, err := io.WriteString(c, s.name+"\n"); err != nil {
		return
	}
	io.Copy(io.Discard, r)
}

// serveRR echoes every byte with blocking system calls (see blockingFD).
func serveRR(c net.Conn) {
	fd, err := blockingFD(c)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	buf := make([]byte, 64)
	for {
		n, err := readFD(fd, buf)
		if err != nil || n == 0 {
			return
		}
		if err := writeFD(fd, buf[:n]); err != nil {
			return
		}
	}
}

// blockingFD returns a blocking duplicate of c's socket. Request-response
// runs on blocking read and write system calls, as netperf's TCP_RR does,
// not through Go's poller: each transaction then costs the datapath and
// one wake-up on either side, not also the poller's epoll round and a
// goroutine hand-off, which on 2 cores would drown the datapath's share.
// The duplicate shares the socket with c (which becomes blocking too);
// close both.
func blockingFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, fmt.Errorf("dup socket: %w", dupErr)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// readFD reads once from a blocking socket, retrying when a signal (the
// Go runtime's preemption) interrupted it before any byte arrived.
func readFD(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// writeFD writes all of b to a blocking socket.
func writeFD(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func serveStream(c net.Conn) { io.Copy(io.Discard, c) }

// Close stops the listeners (open connections end with their clients).
func (s *servers) Close() error {
	var errs []error
	for _, ln := range s.lns {
		errs = append(errs, ln.Close())
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// connOnce makes one connection: connect, send a request, read the
// answer, close. It must run inside the client's namespace. It returns
// the answer and how long it all took. To the bench servers the request
// is a line and the answer the server's name; with httpGET an HTTP/1.1
// GET whose response body is the answer.
//
// The client closes first and aborts (RST): neither side keeps the
// connection in TIME-WAIT, so thousands of connections a second reuse
// client ports without a server refusing the new SYN (which costs the
// client a one-second retransmission).
//
// localPort 0 takes an ephemeral port; waitCarried's probes give their own.
func connOnce(addr string, localPort int, timeout time.Duration, httpGET bool) (string, time.Duration, error) {
	start := time.Now()
	d := net.Dialer{Timeout: timeout}
	if localPort != 0 {
		d.LocalAddr = &net.TCPAddr{Port: localPort}
	}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return "", 0, err
	}
	defer func() {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	c.SetDeadline(start.Add(timeout + time.Second))
	r := bufio.NewReader(c)
	var ans string
	if httpGET {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
			return "", 0, err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return "", 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return "", 0, err
		}
		ans = string(b)
	} else {
		if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
			return "", 0, err
		}
		if ans, err = r.ReadString('\n'); err != nil {
			return "", 0, err
		}
	}
	return ans, time.Since(start), nil
}

// connStats is the result of a series of connections.
type connStats struct {
	lat     []float64 // µs per connection
	elapsed time.Duration
	failed  int
}

// connSeries makes n connections one after the other from the namespace
// at nsPath to addr.
func connSeries(ctx context.Context, nsPath, addr string, n int, httpGET bool) (connStats, error) {
	var st connStats
	err := netnsDo(nsPath, func() error {
		start := time.Now()
		for range n {
			if err := ctx.Err(); err != nil {
				return err
			}
			_, d, err := connOnce(addr, 0, 2*time.Second, httpGET)
			if err != nil {
				st.failed++
				if st.failed > n/10+1 {
					return fmt.Errorf("connections to %s fail: %w", addr, err)
				}
				continue
			}
			st.lat = append(st.lat, float64(d.Nanoseconds())/1e3)
		}
		st.elapsed = time.Since(start)
		return nil
	})
	return st, err
}

// rr runs a 1-byte request/response ping-pong on one connection for d
// and returns transactions per second. Both ends use blocking system
// calls (see blockingFD); a lost answer ends the run after a timeout.
func rr(nsPath, addr string, d time.Duration) (float64, error) {
	var rate float64
	err := netnsDo(nsPath, func() error {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		fd, err := blockingFD(c)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		buf := []byte{'x'}
		n := 0
		start := time.Now()
		for time.Since(start) < d {
			if err := writeFD(fd, buf); err != nil {
				return fmt.Errorf("request %d: %w", n+1, err)
			}
			got, err := readFD(fd, buf)
			if err != nil {
				return fmt.Errorf("answer %d: %w", n+1, err)
			}
			if got != 1 {
				return fmt.Errorf("answer %d: connection closed", n+1)
			}
			n++
		}
		rate = float64(n) / time.Since(start).Seconds()
		return nil
	})
	return rate, err
}

// stream sends as fast as it can on one connection for d and returns
// Gbit/s.
func stream(nsPath, addr string, d time.Duration) (float64, error) {
	var gbps float64
	err := netnsDo(nsPath, func() error {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(d + 5*time.Second))
		buf := make([]byte, 128<<10)
		var sent int64
		start := time.Now()
		for time.Since(start) < d {
			n, err := c.Write(buf)
			sent += int64(n)
			if err != nil {
				return err
			}
		}
		gbps = float64(sent) * 8 / time.Since(start).Seconds() / 1e9
		return nil
	})
	return gbps, err
}

// Probe ports: waitCarried's connections come from random ports in
// [probePortMin, probePortMax), below the kernel's ephemeral range
// (32768–60999 unless changed), which the measured connections use.
//
// A probe of a ClusterIP that kube-proxy in iptables mode has not yet
// programmed is not translated; its connection-tracking entry, created
// without the Service's DNAT, lives on (SYN_SENT: 120 s) after the probe
// gave up, and every later SYN from that port to that ClusterIP follows
// it past the Service and into the void. Measured from probe ports, such
// stale entries would fail 0.1–2% of kube-proxy-iptables connections
// (seen before this split); they are a real hazard of that mode for a
// client that connects before the rules exist, but they are the probes'
// doing, not what a series measures. (nftables mode rejects unallocated
// ClusterIPs, so no entry survives; eBPF translates at the socket or the
// first packet, whatever conntrack holds.)
const (
	probePortMin = 16384
	probePortMax = 32768
)

// waitCarried polls addr from the namespace at nsPath until a connection
// is answered by one of want (any answer when want is empty), starting an
// attempt every interval from a random probe port, and returns when the
// first such answer completed. It gives up at ctx's end.
func waitCarried(ctx context.Context, nsPath, addr string, want map[string]bool, interval time.Duration) (time.Time, error) {
	n, err := ns.GetNS(nsPath)
	if err != nil {
		return time.Time{}, err
	}
	defer n.Close()
	done := make(chan time.Time, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	inflight := make(chan struct{}, 64) // bounds attempts in flight
	for {
		select {
		case t := <-done:
			return t, nil
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s not carried: %w", addr, ctx.Err())
		case <-tick.C:
		}
		select {
		case inflight <- struct{}{}:
		default:
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			n.Do(func(ns.NetNS) error {
				port := probePortMin + rand.IntN(probePortMax-probePortMin)
				ans, _, err := connOnce(addr, port, 100*time.Millisecond, false)
				if err != nil || ctx.Err() != nil {
					return nil
				}
				if len(want) == 0 || want[trimLine(ans)] {
					select {
					case done <- time.Now():
					default:
					}
				}
				return nil
			})
		}()
	}
}

func trimLine(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}
