package connectivity

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Ping sends one ICMP echo request to dst and waits for its reply: the
// ping of `glia connectivity _ping`, which the lab's pods run (the lab
// machine need not have a ping binary). It needs a raw socket (root).
func Ping(ctx context.Context, dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("%s: only IPv4 is supported", dst)
	}
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return 0, fmt.Errorf("open ICMP socket: %w", err)
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	const seq = 1
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("glia-connectivity")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	start := time.Now()
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, fmt.Errorf("send echo request to %s: %w", dst, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("no echo reply from %s within %s: %w", dst, timeout, err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		src, _ := from.(*net.IPAddr)
		switch m.Type {
		case ipv4.ICMPTypeEchoReply:
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq && src != nil && src.IP.Equal(dst.AsSlice()) {
				return time.Since(start), nil
			}
		case ipv4.ICMPTypeDestinationUnreachable:
			if d, ok := m.Body.(*icmp.DstUnreach); ok && len(d.Data) >= 20 && netip.AddrFrom4([4]byte(d.Data[16:20])) == dst {
				return 0, fmt.Errorf("%s: destination unreachable (code %d) from %s", dst, m.Code, from)
			}
		}
	}
}
