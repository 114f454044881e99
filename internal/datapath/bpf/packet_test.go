package bpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Crafting and checking packets for prog.Run tests, with encoding/binary
// only. Checksums are computed here and verified on every output.

var (
	macA = []byte{0x02, 0, 0, 0, 0, 0xa}
	macB = []byte{0x02, 0, 0, 0, 0, 0xb}
)

const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
)

// csum is the Internet checksum of b, seeded with sum.
func csum(sum uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = (sum & 0xffff) + (sum >> 16)
	}
	return ^uint16(sum)
}

func pseudoSum(src, dst netip.Addr, proto uint8, l4len int) uint32 {
	s, d := src.As4(), dst.As4()
	var sum uint32
	sum += uint32(binary.BigEndian.Uint16(s[0:])) + uint32(binary.BigEndian.Uint16(s[2:]))
	sum += uint32(binary.BigEndian.Uint16(d[0:])) + uint32(binary.BigEndian.Uint16(d[2:]))
	sum += uint32(proto) + uint32(l4len)
	return sum
}

// ipPacket builds an IPv4 header + l4 (whose checksum field is filled
// here for TCP/UDP/ICMP).
func ipPacket(src, dst netip.Addr, proto uint8, l4 []byte) []byte {
	ip := make([]byte, 20+len(l4))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	ip[8] = 64
	ip[9] = proto
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], csum(0, ip[:20]))
	copy(ip[20:], l4)
	l := ip[20:]
	switch proto {
	case protoTCP:
		binary.BigEndian.PutUint16(l[16:], 0)
		binary.BigEndian.PutUint16(l[16:], csum(pseudoSum(src, dst, proto, len(l)), l))
	case protoUDP:
		binary.BigEndian.PutUint16(l[6:], 0)
		c := csum(pseudoSum(src, dst, proto, len(l)), l)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l[6:], c)
	case protoICMP:
		binary.BigEndian.PutUint16(l[2:], 0)
		binary.BigEndian.PutUint16(l[2:], csum(0, l))
	}
	return ip
}

func ether(ip []byte) []byte {
	out := make([]byte, 14, 14+len(ip))
	copy(out[0:], macB)
	copy(out[6:], macA)
	binary.BigEndian.PutUint16(out[12:], 0x0800)
	return append(out, ip...)
}

const (
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

func tcpSeg(sport, dport uint16, flags uint8, seq uint32, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	copy(b[20:], payload)
	return b
}

func udpDgram(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	return b
}

func icmpMsg(typ, code uint8, id, seq uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], payload)
	return b
}

func tcpPkt(src, dst string, sport, dport uint16, flags uint8) []byte {
	return ether(ipPacket(netip.MustParseAddr(src), netip.MustParseAddr(dst), protoTCP,
		tcpSeg(sport, dport, flags, 1000, []byte("hello"))))
}

func udpPkt(src, dst string, sport, dport uint16) []byte {
	return ether(ipPacket(netip.MustParseAddr(src), netip.MustParseAddr(dst), protoUDP,
		udpDgram(sport, dport, []byte("question"))))
}

func echoPkt(src, dst string, typ uint8, id uint16) []byte {
	return ether(ipPacket(netip.MustParseAddr(src), netip.MustParseAddr(dst), protoICMP,
		icmpMsg(typ, 0, id, 7, []byte("pingpong"))))
}

// icmpErr wraps the IP packet of quoted (an Ethernet frame) in an ICMP
// error from src to dst.
func icmpErr(src, dst string, typ, code uint8, quoted []byte) []byte {
	return ether(ipPacket(netip.MustParseAddr(src), netip.MustParseAddr(dst), protoICMP,
		icmpMsg(typ, code, 0, 0, quoted[14:])))
}

// flow is what a test asserts about a packet: its tuple and, for ICMP
// errors, the quoted tuple.
type flow struct {
	Src, Dst     string
	SPort, DPort uint16 // ICMP echo: identifier in SPort
	Proto        uint8
	TCPFlags     uint8  `cmp:",omitempty"`
	ICMPType     uint8  `cmp:",omitempty"`
	Inner        *flow  `cmp:",omitempty"`
	TCPAck       uint32 `cmp:",omitempty"`
}

// decode parses an IPv4 packet (no Ethernet) and verifies every checksum.
func decodeIP(b []byte, quoted bool) (flow, error) {
	var f flow
	if len(b) < 20 || b[0]>>4 != 4 {
		return f, fmt.Errorf("not IPv4: % x", b)
	}
	ihl := int(b[0]&0xf) * 4
	if csum(0, b[:ihl]) != 0 {
		return f, fmt.Errorf("bad IP header checksum in % x", b[:ihl])
	}
	total := int(binary.BigEndian.Uint16(b[2:]))
	if !quoted {
		if total != len(b) {
			return f, fmt.Errorf("IP total length %d, packet %d", total, len(b))
		}
	} else if total < len(b) {
		b = b[:total]
	}
	src, dst := netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
	f.Src, f.Dst, f.Proto = src.String(), dst.String(), b[9]
	l := b[ihl:]
	complete := total == len(b)
	switch f.Proto {
	case protoTCP:
		if len(l) < 4 {
			return f, fmt.Errorf("short TCP")
		}
		f.SPort, f.DPort = binary.BigEndian.Uint16(l), binary.BigEndian.Uint16(l[2:])
		if len(l) >= 20 {
			f.TCPFlags = l[13]
			if l[13]&tcpRST != 0 {
				f.TCPAck = binary.BigEndian.Uint32(l[8:])
			}
		}
		if complete && csum(pseudoSum(src, dst, protoTCP, len(l)), l) != 0 {
			return f, fmt.Errorf("bad TCP checksum")
		}
	case protoUDP:
		if len(l) < 4 {
			return f, fmt.Errorf("short UDP")
		}
		f.SPort, f.DPort = binary.BigEndian.Uint16(l), binary.BigEndian.Uint16(l[2:])
		if complete && binary.BigEndian.Uint16(l[6:]) != 0 && csum(pseudoSum(src, dst, protoUDP, len(l)), l) != 0 {
			return f, fmt.Errorf("bad UDP checksum")
		}
	case protoICMP:
		if len(l) < 8 {
			return f, fmt.Errorf("short ICMP")
		}
		if complete && csum(0, l) != 0 {
			return f, fmt.Errorf("bad ICMP checksum")
		}
		f.ICMPType = l[0]
		switch l[0] {
		case 0, 8:
			f.SPort = binary.BigEndian.Uint16(l[4:])
		case 3, 11:
			in, err := decodeIP(l[8:], true)
			if err != nil {
				return f, fmt.Errorf("quoted packet: %w", err)
			}
			f.Inner = &in
		}
	}
	return f, nil
}

func decode(frame []byte) (flow, error) {
	if len(frame) < 14 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
		return flow{}, fmt.Errorf("not an IPv4 frame: % x", frame)
	}
	return decodeIP(frame[14:], false)
}
