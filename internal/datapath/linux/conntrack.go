package linux

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The kernel's connection tracking table, as the handover between the
// legacy datapath (iptables MASQUERADE, kube-proxy's DNAT) and the eBPF
// datapath's maps reads and writes it: IPv4 TCP and UDP flows with their
// NAT. The dump goes through vishvananda/netlink; creating and deleting
// entries build their ctnetlink messages on its netlink plumbing, for the
// library has no NAT attributes (CTA_NAT_SRC, CTA_NAT_DST) nor TCP flags.
// Everything happens in the network namespace of the calling thread.

// Tuple is one direction of a flow: source and destination as a packet of
// that direction carries them.
type Tuple struct {
	Src, Dst netip.AddrPort
}

func (t Tuple) String() string { return t.Src.String() + " -> " + t.Dst.String() }

// Inverse is the tuple of the other direction without translation.
func (t Tuple) Inverse() Tuple { return Tuple{Src: t.Dst, Dst: t.Src} }

// CTFlow is a kernel conntrack entry: Orig as the side that opened the
// flow sent it, Reply as the other side's packets arrive (after the NAT
// of the entry: a source NAT shows as Reply.Dst != Orig.Src, a
// destination NAT as Reply.Src != Orig.Dst).
type CTFlow struct {
	Proto    uint8 // unix.IPPROTO_TCP or unix.IPPROTO_UDP
	Orig     Tuple
	Reply    Tuple
	TCPState uint8  // TCP: nl.TCP_CONNTRACK_*
	Timeout  uint32 // seconds left
}

func (f CTFlow) String() string {
	p := "udp"
	if f.Proto == unix.IPPROTO_TCP {
		p = "tcp"
	}
	return fmt.Sprintf("%s %s (reply %s)", p, f.Orig, f.Reply)
}

// SNAT says whether the entry translates the source of the opening side,
// and to what.
func (f CTFlow) SNAT() (netip.AddrPort, bool) { return f.Reply.Dst, f.Reply.Dst != f.Orig.Src }

// DNAT says whether the entry translates the destination the opening side
// chose, and to what.
func (f CTFlow) DNAT() (netip.AddrPort, bool) { return f.Reply.Src, f.Reply.Src != f.Orig.Dst }

// Established says whether the flow carries data both ways: a TCP flow in
// ESTABLISHED, any UDP flow (the kernel keeps UDP entries only while they
// see packets).
func (f CTFlow) Established() bool {
	return f.Proto == unix.IPPROTO_UDP || f.TCPState == nl.TCP_CONNTRACK_ESTABLISHED
}

// dumpRetries bounds the retries of a conntrack dump the kernel
// interrupted (the table changed under it).
const dumpRetries = 5

// ConntrackList returns the IPv4 TCP and UDP entries of the kernel's
// conntrack table.
func ConntrackList() ([]CTFlow, error) {
	var (
		raw []*netlink.ConntrackFlow
		err error
	)
	for range dumpRetries {
		raw, err = netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("dump the kernel's conntrack table: %w", err)
	}
	out := make([]CTFlow, 0, len(raw))
	for _, r := range raw {
		if r.Forward.Protocol != unix.IPPROTO_TCP && r.Forward.Protocol != unix.IPPROTO_UDP {
			continue
		}
		f, ok := flowOf(r)
		if ok {
			out = append(out, f)
		}
	}
	return out, nil
}

func flowOf(r *netlink.ConntrackFlow) (CTFlow, bool) {
	ap := func(ip []byte, port uint16) (netip.AddrPort, bool) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return netip.AddrPort{}, false
		}
		a = a.Unmap()
		return netip.AddrPortFrom(a, port), a.Is4()
	}
	var f CTFlow
	var ok [4]bool
	f.Proto = r.Forward.Protocol
	f.Orig.Src, ok[0] = ap(r.Forward.SrcIP, r.Forward.SrcPort)
	f.Orig.Dst, ok[1] = ap(r.Forward.DstIP, r.Forward.DstPort)
	f.Reply.Src, ok[2] = ap(r.Reverse.SrcIP, r.Reverse.SrcPort)
	f.Reply.Dst, ok[3] = ap(r.Reverse.DstIP, r.Reverse.DstPort)
	if tcp, isTCP := r.ProtoInfo.(*netlink.ProtoInfoTCP); isTCP {
		f.TCPState = tcp.State
	}
	f.Timeout = r.TimeOut
	return f, ok[0] && ok[1] && ok[2] && ok[3]
}

// ctnetlink attribute numbers the library does not name
// (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaNATSrc            = 6
	ctaNATDst            = 13
	ctaNATV4MinIP        = 1
	ctaNATV4MaxIP        = 2
	ctaNATProto          = 3
	ctaProtoNATPortMin   = 1
	ctaProtoNATPortMax   = 2
	ctaProtoinfoTCP      = 1
	ctaProtoinfoTCPState = 1
	ctaProtoinfoTCPFlgO  = 4 // CTA_PROTOINFO_TCP_FLAGS_ORIGINAL
	ctaProtoinfoTCPFlgR  = 5 // CTA_PROTOINFO_TCP_FLAGS_REPLY
	ctaTupleIP           = 1
	ctaTupleProto        = 2
	ctaIPv4Src           = 1
	ctaIPv4Dst           = 2
	ctaProtoNum          = 1
	ctaProtoSrcPort      = 2
	ctaProtoDstPort      = 3

	ipsSeenReply = 1 << 1 // IPS_SEEN_REPLY
	ipsAssured   = 1 << 2 // IPS_ASSURED
	ipsConfirmed = 1 << 3 // IPS_CONFIRMED: set by ctnetlink on a new entry; the status given must keep it

	// tcpFlagBeLiberal is IP_CT_TCP_FLAG_BE_LIBERAL: the kernel does not
	// check the sequence numbers of an entry it did not see open (its
	// window scale is unknown to it).
	tcpFlagBeLiberal = 0x08
)

func tupleAttr(typ int, proto uint8, t Tuple) *nl.RtAttr {
	a := nl.NewRtAttr(unix.NLA_F_NESTED|typ, nil)
	ip := a.AddRtAttr(unix.NLA_F_NESTED|ctaTupleIP, nil)
	src, dst := t.Src.Addr().As4(), t.Dst.Addr().As4()
	ip.AddRtAttr(ctaIPv4Src, src[:])
	ip.AddRtAttr(ctaIPv4Dst, dst[:])
	p := a.AddRtAttr(unix.NLA_F_NESTED|ctaTupleProto, nil)
	p.AddRtAttr(ctaProtoNum, []byte{proto})
	p.AddRtAttr(ctaProtoSrcPort, nl.BEUint16Attr(t.Src.Port()))
	p.AddRtAttr(ctaProtoDstPort, nl.BEUint16Attr(t.Dst.Port()))
	return a
}

func natAttr(typ int, to netip.AddrPort) *nl.RtAttr {
	a := nl.NewRtAttr(unix.NLA_F_NESTED|typ, nil)
	ip := to.Addr().As4()
	a.AddRtAttr(ctaNATV4MinIP, ip[:])
	a.AddRtAttr(ctaNATV4MaxIP, ip[:])
	p := a.AddRtAttr(unix.NLA_F_NESTED|ctaNATProto, nil)
	p.AddRtAttr(ctaProtoNATPortMin, nl.BEUint16Attr(to.Port()))
	p.AddRtAttr(ctaProtoNATPortMax, nl.BEUint16Attr(to.Port()))
	return a
}

func ctRequest(op, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest((unix.NFNL_SUBSYS_CTNETLINK<<8)|op, flags)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: nl.NFNETLINK_V0})
	return req
}

// ErrConntrackExists is returned by ConntrackCreate for a flow whose
// original tuple the kernel already tracks.
var ErrConntrackExists = errors.New("the kernel already tracks this flow")

// ConntrackCreate makes the kernel track f as an established, assured
// flow with f's translation: a source NAT to f.Reply.Dst and a destination
// NAT to f.Reply.Src where they differ from the original tuple, set up by
// the kernel's NAT core (CTA_NAT_SRC, CTA_NAT_DST) so that it translates
// the flow's packets both ways from then on and keeps the translated
// tuple taken. TCP flows are ESTABLISHED with liberal window tracking
// both ways. It returns ErrConntrackExists when the kernel already tracks
// f.Orig.
func ConntrackCreate(f CTFlow) error {
	if !f.Orig.Src.Addr().Is4() || !f.Orig.Dst.Addr().Is4() || !f.Reply.Src.Addr().Is4() || !f.Reply.Dst.Addr().Is4() {
		return fmt.Errorf("conntrack entry %s: IPv4 only", f)
	}
	if f.Proto != unix.IPPROTO_TCP && f.Proto != unix.IPPROTO_UDP {
		return fmt.Errorf("conntrack entry %s: TCP or UDP only", f)
	}
	timeout := f.Timeout
	if timeout == 0 {
		timeout = 1
	}
	req := ctRequest(nl.IPCTNL_MSG_CT_NEW, unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	// The reply tuple is the untranslated inverse: the NAT core derives
	// the translated one from the NAT attributes, as it does for a packet.
	req.AddData(tupleAttr(nl.CTA_TUPLE_ORIG, f.Proto, f.Orig))
	req.AddData(tupleAttr(nl.CTA_TUPLE_REPLY, f.Proto, f.Orig.Inverse()))
	if to, ok := f.DNAT(); ok {
		req.AddData(natAttr(ctaNATDst, to))
	}
	if to, ok := f.SNAT(); ok {
		req.AddData(natAttr(ctaNATSrc, to))
	}
	req.AddData(nl.NewRtAttr(nl.CTA_STATUS, nl.BEUint32Attr(ipsSeenReply|ipsAssured|ipsConfirmed)))
	req.AddData(nl.NewRtAttr(nl.CTA_TIMEOUT, nl.BEUint32Attr(timeout)))
	if f.Proto == unix.IPPROTO_TCP {
		pi := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_PROTOINFO, nil)
		tcp := pi.AddRtAttr(unix.NLA_F_NESTED|ctaProtoinfoTCP, nil)
		tcp.AddRtAttr(ctaProtoinfoTCPState, []byte{nl.TCP_CONNTRACK_ESTABLISHED})
		liberal := []byte{tcpFlagBeLiberal, tcpFlagBeLiberal} // struct nf_ct_tcp_flags {flags, mask}
		tcp.AddRtAttr(ctaProtoinfoTCPFlgO, liberal)
		tcp.AddRtAttr(ctaProtoinfoTCPFlgR, liberal)
		req.AddData(pi)
	}
	if _, err := req.Execute(unix.NETLINK_NETFILTER, 0); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return ErrConntrackExists
		}
		return fmt.Errorf("create conntrack entry %s: %w", f, err)
	}
	return nil
}

// ConntrackDelete removes the kernel's entry of the flow whose original
// tuple is orig; a missing entry is not an error.
func ConntrackDelete(proto uint8, orig Tuple) error {
	req := ctRequest(nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
	req.AddData(tupleAttr(nl.CTA_TUPLE_ORIG, proto, orig))
	if _, err := req.Execute(unix.NETLINK_NETFILTER, 0); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete conntrack entry %s: %w", orig, err)
	}
	return nil
}

// SysctlTCPLiberal is the sysctl that stops the kernel's connection
// tracking from marking out-of-window TCP segments INVALID.
const SysctlTCPLiberal = "net.netfilter.nf_conntrack_tcp_be_liberal"

// ConntrackLiberal sets SysctlTCPLiberal to 1 (when connection tracking is
// loaded at all; without it nothing is tracked and nothing is to do) and
// says whether it had to. Across a switch between the datapaths a flow's
// packets take turns through the stack and past it (eBPF host routing
// redirects them), so the kernel's entry of a flow misses the segments
// that went past and its window falls behind: the next segment through
// the stack would be INVALID, left untranslated, and answered with a
// reset — by the node for a reply to its masquerading address, by the
// peer for an un-DNATed reply. In liberal mode conntrack still tracks the
// state and translates, only no longer judges windows; kube-proxy offers
// the same setting (--conntrack-tcp-be-liberal) against the same resets.
// It stays set: the flows carried across a switch may live for days.
func ConntrackLiberal() (bool, error) {
	changed, err := EnsureSysctl(SysctlTCPLiberal, "1")
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return changed, err
}
