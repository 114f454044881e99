package connectivity

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The conn-disrupt programs: a server that keeps connections open and sends
// a tick every TickInterval on each, and answers one-shot requests; and a
// client that holds one long-lived connection to each target, sends a new
// request to each target every RequestInterval, and records every
// interruption in a state file.
//
// Protocol (one TCP connection, one line to start):
//
//	"STREAM\n"  the server writes "tick N\n" every TickInterval until the
//	            connection ends
//	"REQ\n"     the server answers "OK <name>\n" and closes

// TickInterval is how often the server writes on a long-lived connection.
const TickInterval = 100 * time.Millisecond

// Event kinds recorded by the client.
const (
	EventReset         = "reset"          // a long-lived connection ended (RST, EOF, error)
	EventStall         = "stall"          // no tick for longer than StallAfter
	EventRequestFailed = "request-failed" // a new request failed
	EventConnectFailed = "connect-failed" // re-opening a long-lived connection failed
)

// RunConnServer serves the conn-disrupt protocol on addr until ctx is done.
func RunConnServer(ctx context.Context, log *slog.Logger, addr, name string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	log.Info("conn-disrupt server listening", "addr", ln.Addr().String(), "name", name)
	return ServeConnDisrupt(ctx, ln, name)
}

// ServeConnDisrupt serves the conn-disrupt protocol on ln until ctx is done;
// it closes ln.
func ServeConnDisrupt(ctx context.Context, ln net.Listener, name string) error {
	var wg sync.WaitGroup
	conns := map[net.Conn]struct{}{}
	var mu sync.Mutex
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				wg.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			serveConn(ctx, c, name)
		}()
	}
}

func serveConn(ctx context.Context, c net.Conn, name string) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	switch strings.TrimSpace(line) {
	case "REQ":
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "OK %s\n", name)
	case "STREAM":
		t := time.NewTicker(TickInterval)
		defer t.Stop()
		for n := 0; ; n++ {
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprintf(c, "tick %d\n", n); err != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
}

// ConnTarget is one destination of the client.
type ConnTarget struct {
	// Name says what the target is, e.g. "pod glia-test/conn-disrupt-server-x (lab-node-2)".
	Name string `json:"name"`
	Addr string `json:"addr"` // ip:port
}

// ParseConnTarget parses "NAME=IP:PORT".
func ParseConnTarget(s string) (ConnTarget, error) {
	i := strings.LastIndex(s, "=")
	if i <= 0 {
		return ConnTarget{}, fmt.Errorf("target %q: use NAME=IP:PORT", s)
	}
	name, addr := s[:i], s[i+1:]
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return ConnTarget{}, fmt.Errorf("target %q: %w", s, err)
	}
	return ConnTarget{Name: name, Addr: addr}, nil
}

// String is the NAME=IP:PORT form ParseConnTarget reads.
func (t ConnTarget) String() string { return t.Name + "=" + t.Addr }

// ConnEvent is one interruption seen by the client.
type ConnEvent struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	// Detail is the error, or what the stall ended with.
	Detail string `json:"detail,omitempty"`
	// Duration is how long a stall lasted, or how long a reset connection
	// had been up.
	Duration time.Duration `json:"duration,omitempty"`
}

// ConnTargetState is the client's record of one target.
type ConnTargetState struct {
	ConnTarget
	Connected    bool        `json:"connected"`
	Connections  int         `json:"connections"` // long-lived connections opened
	Ticks        uint64      `json:"ticks"`
	LastTick     time.Time   `json:"lastTick"`
	StalledSince time.Time   `json:"stalledSince,omitzero"`
	Requests     uint64      `json:"requests"`
	Failed       uint64      `json:"failedRequests"`
	Events       []ConnEvent `json:"events,omitempty"`
	// EventsDropped counts events not kept (the list is bounded).
	EventsDropped int `json:"eventsDropped,omitempty"`
}

// ConnState is what the client writes to its state file.
type ConnState struct {
	Client  string            `json:"client"`
	Started time.Time         `json:"started"`
	Updated time.Time         `json:"updated"`
	Targets []ConnTargetState `json:"targets"`
}

// maxEvents bounds the events kept per target.
const maxEvents = 200

// ConnClientConfig configures RunConnClient.
type ConnClientConfig struct {
	Name            string
	Targets         []ConnTarget
	StatePath       string
	RequestInterval time.Duration
	StallAfter      time.Duration
	RequestTimeout  time.Duration
	// WriteInterval is how often the state file is written.
	WriteInterval time.Duration
}

type connClient struct {
	cfg ConnClientConfig
	mu  sync.Mutex
	st  ConnState
}

func (c *connClient) update(i int, f func(ts *ConnTargetState)) {
	c.mu.Lock()
	f(&c.st.Targets[i])
	c.mu.Unlock()
}

func (c *connClient) event(i int, ev ConnEvent) {
	c.update(i, func(ts *ConnTargetState) {
		if len(ts.Events) >= maxEvents {
			ts.EventsDropped++
			return
		}
		ts.Events = append(ts.Events, ev)
	})
}

// RunConnClient runs the client until ctx is done, writing its state to
// cfg.StatePath every cfg.WriteInterval. It removes the state file's
// directory when it ends.
func RunConnClient(ctx context.Context, log *slog.Logger, cfg ConnClientConfig) error {
	if len(cfg.Targets) == 0 {
		return errors.New("no targets")
	}
	if cfg.RequestInterval <= 0 || cfg.StallAfter <= 0 || cfg.RequestTimeout <= 0 || cfg.WriteInterval <= 0 {
		return errors.New("intervals and timeouts must be positive")
	}
	if err := os.MkdirAll(filepath.Dir(cfg.StatePath), 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(cfg.StatePath))
	c := &connClient{cfg: cfg, st: ConnState{Client: cfg.Name, Started: time.Now()}}
	for _, t := range cfg.Targets {
		c.st.Targets = append(c.st.Targets, ConnTargetState{ConnTarget: t})
	}
	var wg sync.WaitGroup
	for i := range cfg.Targets {
		wg.Add(2)
		go func() { defer wg.Done(); c.stream(ctx, i) }()
		go func() { defer wg.Done(); c.requests(ctx, i) }()
	}
	log.Info("conn-disrupt client started", "targets", len(cfg.Targets), "state", cfg.StatePath)
	t := time.NewTicker(cfg.WriteInterval)
	defer t.Stop()
	for {
		if err := c.write(); err != nil {
			log.Warn("write state", "error", err)
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
		}
	}
}

func (c *connClient) write() error {
	c.mu.Lock()
	c.st.Updated = time.Now()
	b, err := json.Marshal(&c.st)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := c.cfg.StatePath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.cfg.StatePath)
}

// stream holds one long-lived connection to target i, re-opening it when it
// ends, and records resets and stalls.
func (c *connClient) stream(ctx context.Context, i int) {
	addr := c.cfg.Targets[i].Addr
	d := net.Dialer{Timeout: 2 * time.Second}
	first := true
	for ctx.Err() == nil {
		if !first {
			// Do not spin against a target that refuses.
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		first = false
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() == nil {
				c.event(i, ConnEvent{Time: time.Now(), Kind: EventConnectFailed, Detail: err.Error()})
			}
			continue
		}
		c.holdStream(ctx, i, conn)
		conn.Close()
	}
}

func (c *connClient) holdStream(ctx context.Context, i int, conn net.Conn) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	opened := time.Now()
	conn.SetWriteDeadline(opened.Add(2 * time.Second))
	if _, err := conn.Write([]byte("STREAM\n")); err != nil {
		if ctx.Err() == nil {
			c.event(i, ConnEvent{Time: time.Now(), Kind: EventReset, Detail: "write: " + err.Error()})
		}
		return
	}
	c.update(i, func(ts *ConnTargetState) {
		ts.Connected = true
		ts.Connections++
		ts.LastTick = opened
	})
	defer c.update(i, func(ts *ConnTargetState) { ts.Connected = false; ts.StalledSince = time.Time{} })
	br := bufio.NewReader(conn)
	last := opened
	stalled := false
	// giveUp is how long a stalled connection is kept before it is
	// replaced by a new one.
	const giveUp = 30 * time.Second
	for {
		deadline := last.Add(c.cfg.StallAfter)
		if stalled {
			deadline = last.Add(giveUp)
		}
		conn.SetReadDeadline(deadline)
		_, err := br.ReadString('\n')
		now := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if !stalled {
					stalled = true
					c.update(i, func(ts *ConnTargetState) { ts.StalledSince = last })
					continue
				}
				c.event(i, ConnEvent{Time: last, Kind: EventStall, Duration: now.Sub(last),
					Detail: fmt.Sprintf("no data for %s: connection replaced", giveUp)})
				return
			}
			if stalled {
				c.event(i, ConnEvent{Time: last, Kind: EventStall, Duration: now.Sub(last), Detail: "ended by the reset below"})
			}
			c.event(i, ConnEvent{Time: now, Kind: EventReset, Detail: err.Error(), Duration: now.Sub(opened)})
			return
		}
		if stalled {
			c.event(i, ConnEvent{Time: last, Kind: EventStall, Duration: now.Sub(last), Detail: "resumed"})
			stalled = false
		}
		last = now
		c.update(i, func(ts *ConnTargetState) {
			ts.Ticks++
			ts.LastTick = now
			ts.StalledSince = time.Time{}
		})
	}
}

// requests sends a new request to target i every RequestInterval.
func (c *connClient) requests(ctx context.Context, i int) {
	t := time.NewTicker(c.cfg.RequestInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		err := c.request(ctx, c.cfg.Targets[i].Addr)
		if ctx.Err() != nil {
			return
		}
		c.update(i, func(ts *ConnTargetState) {
			ts.Requests++
			if err != nil {
				ts.Failed++
			}
		})
		if err != nil {
			c.event(i, ConnEvent{Time: start, Kind: EventRequestFailed, Detail: err.Error(), Duration: time.Since(start)})
		}
	}
}

func (c *connClient) request(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	if _, err := conn.Write([]byte("REQ\n")); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if !strings.HasPrefix(line, "OK ") {
		return fmt.Errorf("unexpected answer %q", strings.TrimSpace(line))
	}
	return nil
}

// ConnClientArgs are the arguments of `glia connectivity _conn-client` for cfg.
func ConnClientArgs(cfg ConnClientConfig) []string {
	args := []string{"_conn-client", "--name", cfg.Name, "--state", cfg.StatePath,
		"--request-interval", cfg.RequestInterval.String(), "--stall-after", cfg.StallAfter.String(),
		"--request-timeout", cfg.RequestTimeout.String()}
	for _, t := range cfg.Targets {
		args = append(args, "--target", t.String())
	}
	return args
}

// ConnServerArgs are the arguments of `glia connectivity _conn-server`.
func ConnServerArgs(port int) []string {
	return []string{"_conn-server", "--listen", ":" + strconv.Itoa(port)}
}
