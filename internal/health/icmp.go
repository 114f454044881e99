package health

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// icmpMode is the kind of socket echo requests are sent on.
type icmpMode int32

const (
	// icmpAuto tries icmpDgram and falls back to icmpRaw when
	// net.ipv4.ping_group_range does not include the agent's group.
	icmpAuto icmpMode = iota
	// icmpDgram is an unprivileged ICMP datagram socket ("udp4"): the
	// kernel picks the echo ID and hands each socket its own replies.
	icmpDgram
	// icmpRaw is a raw socket ("ip4:icmp", needs CAP_NET_RAW): it sees
	// every ICMP packet, replies are matched by ID and sequence.
	icmpRaw
)

// pinger sends ICMP echo requests, one socket per probe.
type pinger struct {
	netns string // namespace to open sockets in; "" for the caller's
	id    uint16 // echo ID on raw sockets
	seq   atomic.Uint32
	mode  atomic.Int32 // icmpMode learnt by icmpAuto
}

func newPinger(netns string) *pinger {
	return &pinger{netns: netns, id: uint16(rand.Uint32())}
}

// errUnreachable is wrapped by the error of an echo answered with an ICMP
// destination unreachable.
var errUnreachable = errors.New("destination unreachable")

// ping sends one echo request to dst and waits for its reply until ctx is
// done. It returns the round-trip time.
func (p *pinger) ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	mode := icmpMode(p.mode.Load())
	if mode == icmpAuto {
		rtt, err := p.pingWith(ctx, icmpDgram, dst)
		if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
			return rtt, err
		}
		p.mode.Store(int32(icmpRaw))
		mode = icmpRaw
	}
	return p.pingWith(ctx, mode, dst)
}

func (p *pinger) listen(mode icmpMode) (*icmp.PacketConn, error) {
	network := "udp4"
	if mode == icmpRaw {
		network = "ip4:icmp"
	}
	var c *icmp.PacketConn
	open := func() error {
		var err error
		c, err = icmp.ListenPacket(network, "0.0.0.0")
		return err
	}
	var err error
	if p.netns == "" {
		err = open()
	} else {
		err = ns.WithNetNSPath(p.netns, func(ns.NetNS) error { return open() })
	}
	if err != nil {
		return nil, fmt.Errorf("open icmp socket (%s): %w", network, err)
	}
	return c, nil
}

func (p *pinger) pingWith(ctx context.Context, mode icmpMode, dst netip.Addr) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("%v is not an IPv4 address", dst)
	}
	c, err := p.listen(mode)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()

	seq := uint16(p.seq.Add(1))
	payload := make([]byte, 16)
	copy(payload, "glia-health")
	binary.BigEndian.PutUint32(payload[12:], uint32(seq)^uint32(p.id)<<16)
	req := icmp.Message{
		Type: ipv4.ICMPTypeEcho,
		Body: &icmp.Echo{ID: int(p.id), Seq: int(seq), Data: payload},
	}
	wb, err := req.Marshal(nil)
	if err != nil {
		return 0, fmt.Errorf("marshal echo request: %w", err)
	}
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if mode == icmpDgram {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	start := time.Now()
	if _, err := c.WriteTo(wb, to); err != nil {
		return 0, ctxErr(ctx, fmt.Errorf("send echo request: %w", err))
	}
	rb := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(rb)
		if err != nil {
			return 0, ctxErr(ctx, fmt.Errorf("wait for echo reply: %w", err))
		}
		rtt := time.Since(start)
		msg, err := icmp.ParseMessage(1, rb[:n])
		if err != nil {
			continue
		}
		switch msg.Type {
		case ipv4.ICMPTypeEchoReply:
			echo, ok := msg.Body.(*icmp.Echo)
			if !ok || echo.Seq != int(seq) || !bytes.Equal(echo.Data, payload) || addrOf(from) != dst {
				continue
			}
			// A datagram socket's kernel sets the ID; a raw socket's
			// replies to other probes share the sequence space.
			if mode == icmpRaw && echo.ID != int(p.id) {
				continue
			}
			return rtt, nil
		case ipv4.ICMPTypeDestinationUnreachable:
			du, ok := msg.Body.(*icmp.DstUnreach)
			if !ok || !quotesEcho(du.Data, dst, p.id, seq, mode) {
				continue
			}
			return 0, fmt.Errorf("%w: %s (from %s)", errUnreachable, unreachText(msg.Code), addrOf(from))
		}
	}
}

// quotesEcho says whether the quoted packet of an ICMP error is our echo
// request to dst.
func quotesEcho(b []byte, dst netip.Addr, id, seq uint16, mode icmpMode) bool {
	if len(b) < 20 || b[0]>>4 != 4 {
		return false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl+8 || b[9] != 1 {
		return false
	}
	if netip.AddrFrom4([4]byte(b[16:20])) != dst {
		return false
	}
	e := b[ihl:]
	if e[0] != byte(ipv4.ICMPTypeEcho) || binary.BigEndian.Uint16(e[6:8]) != seq {
		return false
	}
	return mode != icmpRaw || binary.BigEndian.Uint16(e[4:6]) == id
}

func unreachText(code int) string {
	switch code {
	case 0:
		return "network unreachable"
	case 1:
		return "host unreachable"
	case 3:
		return "port unreachable"
	case 9, 10, 13:
		return "administratively prohibited"
	}
	return fmt.Sprintf("destination unreachable (code %d)", code)
}

func addrOf(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	}
	got, _ := netip.AddrFromSlice(ip)
	return got.Unmap()
}

// ctxErr returns ctx's error when ctx ended, so that a deadline set from it
// reads as a timeout rather than as an I/O error.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}
