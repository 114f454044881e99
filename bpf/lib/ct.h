/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Lifetimes of CT and NAT entries. An entry lives for a time that depends
 * on its protocol and state (CT_F_* state bits) after it was last
 * refreshed; an expired entry is treated as absent (and deleted or
 * overwritten where it is found), so a new connection reusing the tuple
 * of a finished one never inherits its translation. The LRU maps evict
 * what no packet comes back for: there is no garbage collector.
 * Mirrored in internal/maps (Lifetime). */
#ifndef __GLIA_CT_H
#define __GLIA_CT_H

#include "common.h"
#include "maps.h"
#include "pkt.h"

/* seconds, as Cilium's defaults */
#define CT_LIFETIME_TCP 21600    /* established */
#define CT_LIFETIME_TCP_SYN 60   /* no segment without SYN yet */
#define CT_LIFETIME_TCP_CLOSE 10 /* after a FIN or RST */
#define CT_LIFETIME_NONTCP 60    /* UDP, ICMP echo */

#define NSEC_PER_SEC 1000000000ULL
/* An entry is rewritten for a packet only when its state changes or its
 * last refresh is older than this: at most one write per flow and second
 * otherwise. */
#define CT_REFRESH_NS NSEC_PER_SEC

static __always_inline __u64 ct_lifetime_ns(__u8 proto, __u16 flags)
{
	__u64 s;

	if (!(flags & CT_F_TRACKED))
		s = proto == IPPROTO_TCP ? CT_LIFETIME_TCP : CT_LIFETIME_NONTCP;
	else if (proto != IPPROTO_TCP)
		s = CT_LIFETIME_NONTCP;
	else if (flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING))
		s = CT_LIFETIME_TCP_CLOSE;
	else if (flags & CT_F_SEEN_NON_SYN)
		s = CT_LIFETIME_TCP;
	else
		s = CT_LIFETIME_TCP_SYN;
	return s * NSEC_PER_SEC;
}

/* ct_expired compares in modular arithmetic: the age of an entry is right
 * whatever the clock's value. */
static __always_inline int ct_expired(__u64 last_seen, __u8 proto, __u16 flags, __u64 now)
{
	return now - last_seen > ct_lifetime_ns(proto, flags);
}

static __always_inline int ct_closing(__u16 flags)
{
	return (flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING)) != 0;
}

/* tcp_syn_only: a SYN without ACK (nor RST), the first segment of a
 * connection. */
static __always_inline int tcp_syn_only(struct pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN;
}

/* ct_state_next folds a packet of the flow into its state bits: reply is
 * 0 for a packet of the side that opened the flow, 1 for the other. */
static __always_inline __u16 ct_state_next(__u16 flags, struct pkt *p, int reply)
{
	flags |= CT_F_TRACKED;
	if (reply)
		flags |= CT_F_SEEN_REPLY;
	if (p->proto != IPPROTO_TCP)
		return flags;
	if (!(p->tcp_flags & TCP_FLAG_SYN))
		flags |= CT_F_SEEN_NON_SYN;
	if (p->tcp_flags & TCP_FLAG_RST)
		flags |= CT_F_TX_CLOSING | CT_F_RX_CLOSING;
	else if (p->tcp_flags & TCP_FLAG_FIN)
		flags |= reply ? CT_F_RX_CLOSING : CT_F_TX_CLOSING;
	return flags;
}

/* ct_continues says whether p, from the side that opened a flow,
 * continues the flow of its live entry: a SYN on a closing flow is a new
 * connection reusing the tuple. */
static __always_inline int ct_continues(__u64 last_seen, __u16 flags, struct pkt *p, __u64 now)
{
	if (ct_expired(last_seen, p->proto, flags, now))
		return 0;
	return !(tcp_syn_only(p) && ct_closing(flags));
}

/* ct_touch folds p into a CT entry and refreshes it, writing only when
 * the state changed or the last refresh is CT_REFRESH_NS old. Returns 1
 * when it wrote. */
static __always_inline int ct_touch(struct ct_entry *ct, struct pkt *p, int reply, __u64 now)
{
	__u16 flags = ct_state_next(ct->flags, p, reply);
	__u8 seen = p->proto == IPPROTO_TCP ? p->tcp_flags : 0;
	__u8 tx = ct->tx_flags_seen, rx = ct->rx_flags_seen;

	if (reply)
		rx |= seen;
	else
		tx |= seen;
	if (flags == ct->flags && tx == ct->tx_flags_seen && rx == ct->rx_flags_seen &&
	    now - ct->last_seen < CT_REFRESH_NS)
		return 0;
	ct->flags = flags;
	ct->tx_flags_seen = tx;
	ct->rx_flags_seen = rx;
	ct->last_seen = now;
	return 1;
}

/* ct_mirror copies the state of a forward entry into its reply entry. */
static __always_inline void ct_mirror(struct ct_entry *dst, const struct ct_entry *src)
{
	dst->flags = (dst->flags & ~CT_F_STATE) | (src->flags & CT_F_STATE);
	dst->tx_flags_seen = src->tx_flags_seen;
	dst->rx_flags_seen = src->rx_flags_seen;
	dst->last_seen = src->last_seen;
}

/* nat_touch is ct_touch for a NAT entry. */
static __always_inline int nat_touch(struct nat_entry *ne, struct pkt *p, int reply, __u64 now)
{
	__u16 flags = ct_state_next(ne->flags, p, reply);

	if (flags == ne->flags && now - ne->last_seen < CT_REFRESH_NS)
		return 0;
	ne->flags = flags;
	ne->last_seen = now;
	return 1;
}

#endif
