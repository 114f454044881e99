/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Source NAT to the node's address (BPF masquerade, NodePort to a remote
 * backend) with port allocation, and its reverse. */
#ifndef __GLIA_NAT_H
#define __GLIA_NAT_H

#include "common.h"
#include "maps.h"
#include "pkt.h"

/* Translated source ports. The node's own ephemeral ports stay below
 * (the loader lowers net.ipv4.ip_local_port_range to end at
 * NAT_PORT_MIN - 1), so a translation never takes the port of a
 * connection the node opened. Mirrored in internal/datapath/bpf. */
#define NAT_PORT_MIN 49000
#define NAT_PORT_MAX 65535
#define NAT_PORT_RANGE (NAT_PORT_MAX - NAT_PORT_MIN + 1)
#define NAT_TRIES 32

/* snat allocates (or finds) a translation of p's source to `to` and
 * rewrites the packet. Returns 0, or a negative value when no port is
 * free or the rewrite failed. */
static __always_inline int snat(struct __sk_buff *ctx, struct pkt *p, __be32 to)
{
	struct tuple ek = {
		.saddr = p->saddr, .daddr = p->daddr,
		.sport = p->sport, .dport = p->dport,
		.proto = p->proto, .dir = NAT_EGRESS,
	};
	struct nat_entry *ne, fwd = {}, rev = {};
	__u64 now = bpf_ktime_get_ns();
	__be16 port = 0;
	__u32 h, i;

	ne = bpf_map_lookup_elem(&glia_nat, &ek);
	if (ne && ne->to_addr == to) {
		ne->last_seen = now;
		port = ne->to_port;
	} else {
		struct tuple rk = {
			.saddr = p->daddr, .daddr = to,
			.proto = p->proto, .dir = NAT_INGRESS,
		};
		/* The reply carries our port as its destination; for ICMP echo
		 * the identifier travels in the same field both ways. A flow
		 * keeps its own port when it is in the NAT range (and free);
		 * ICMP identifiers are not ports, any is kept. */
		__be16 orig = p->sport;
		__u16 horig = bpf_ntohs(orig);
		int keep = p->proto == IPPROTO_ICMP || (horig >= NAT_PORT_MIN && horig <= NAT_PORT_MAX);
		rev.last_seen = now;
		rev.to_addr = p->saddr;
		rev.to_port = p->sport;
		h = hash_tuple(p->saddr, p->daddr, p->sport, p->dport, p->proto);
		for (i = 0; i < NAT_TRIES; i++) {
			__be16 cand = orig;
			if (i > 0 || !keep)
				cand = bpf_htons(NAT_PORT_MIN + mix32(h + i) % NAT_PORT_RANGE);
			rk.sport = p->proto == IPPROTO_ICMP ? 0 : p->dport;
			rk.dport = cand;
			if (bpf_map_update_elem(&glia_nat, &rk, &rev, BPF_NOEXIST) == 0) {
				port = cand;
				break;
			}
		}
		if (!port)
			return -1;
		fwd.last_seen = now;
		fwd.to_addr = to;
		fwd.to_port = port;
		if (bpf_map_update_elem(&glia_nat, &ek, &fwd, BPF_ANY) < 0) {
			bpf_map_delete_elem(&glia_nat, &rk);
			return -1;
		}
	}
	if (set_addr(ctx, p, 1, to) < 0 || set_port(ctx, p, 1, port) < 0)
		return -1;
	return 0;
}

/* rev_snat translates a packet arriving for the node's address back to the
 * endpoint that opened the flow: a reply, or an ICMP error about a packet
 * we translated. Returns 1 when translated, 0 when not ours, <0 on error. */
static __always_inline int rev_snat(struct __sk_buff *ctx, struct pkt *p)
{
	struct tuple rk = { .dir = NAT_INGRESS };
	struct nat_entry *ne;

	if (p->icmp_err) {
		/* the quote is our translated packet: node:port -> remote */
		rk.saddr = p->in_daddr;
		rk.daddr = p->in_saddr;
		rk.sport = p->in_dport;
		rk.dport = p->in_sport;
		rk.proto = p->in_proto;
		ne = bpf_map_lookup_elem(&glia_nat, &rk);
		if (!ne)
			return 0;
		if (set_inner(ctx, p, 1, ne->to_addr, ne->to_port) < 0 ||
		    set_addr(ctx, p, 0, ne->to_addr) < 0)
			return -1;
		return 1;
	}
	if (!p->has_l4)
		return 0;
	rk.saddr = p->saddr;
	rk.daddr = p->daddr;
	rk.sport = p->sport;
	rk.dport = p->dport;
	rk.proto = p->proto;
	ne = bpf_map_lookup_elem(&glia_nat, &rk);
	if (!ne)
		return 0;
	ne->last_seen = bpf_ktime_get_ns();
	if (set_addr(ctx, p, 0, ne->to_addr) < 0 || set_port(ctx, p, 0, ne->to_port) < 0)
		return -1;
	return 1;
}

/* note_inbound remembers that a remote outside the cluster opened a flow to
 * a local pod, so that the pod's replies keep its address (they are not a
 * flow to masquerade). */
static __always_inline void note_inbound(struct pkt *p)
{
	struct tuple k = {
		.saddr = p->daddr, .daddr = p->saddr,
		.sport = p->dport, .dport = p->sport,
		.proto = p->proto, .dir = CT_INBOUND,
	};
	struct ct_entry e = {};

	if (bpf_map_lookup_elem(&glia_ct, &k))
		return;
	e.last_seen = bpf_ktime_get_ns();
	bpf_map_update_elem(&glia_ct, &k, &e, BPF_NOEXIST);
}

static __always_inline int is_inbound_reply(struct pkt *p)
{
	struct tuple k = {
		.saddr = p->saddr, .daddr = p->daddr,
		.sport = p->sport, .dport = p->dport,
		.proto = p->proto, .dir = CT_INBOUND,
	};
	return bpf_map_lookup_elem(&glia_ct, &k) != 0;
}

/* snat_icmp_err translates an ICMP error an endpoint sends about a packet
 * that reached it through rev_snat: the quote holds remote -> endpoint,
 * which must become remote -> node:port, and the outer source the node. */
static __always_inline int snat_icmp_err(struct __sk_buff *ctx, struct pkt *p)
{
	struct tuple ek = {
		.saddr = p->in_daddr, .daddr = p->in_saddr,
		.sport = p->in_dport, .dport = p->in_sport,
		.proto = p->in_proto, .dir = NAT_EGRESS,
	};
	struct nat_entry *ne;

	if (!p->icmp_err)
		return 0;
	if (p->in_proto == IPPROTO_ICMP) {
		/* the quote is an echo reply (dport = id); our egress key
		 * has the id as sport */
		ek.sport = p->in_dport;
		ek.dport = 0;
	}
	ne = bpf_map_lookup_elem(&glia_nat, &ek);
	if (!ne)
		return 0;
	if (set_inner(ctx, p, 0, ne->to_addr, ne->to_port) < 0 ||
	    set_addr(ctx, p, 1, ne->to_addr) < 0)
		return -1;
	return 1;
}

#endif
