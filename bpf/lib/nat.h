/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Source NAT to the node's address (BPF masquerade, NodePort to a remote
 * backend) with port allocation, and its reverse. */
#ifndef __GLIA_NAT_H
#define __GLIA_NAT_H

#include "common.h"
#include "maps.h"
#include "pkt.h"
#include "ct.h"

/* Translated source ports. The node's own ephemeral ports stay below
 * (the loader lowers net.ipv4.ip_local_port_range to end at
 * NAT_PORT_MIN - 1), so a translation never takes the port of a
 * connection the node opened. Mirrored in internal/datapath/bpf. */
#define NAT_PORT_MIN 49000
#define NAT_PORT_MAX 65535
#define NAT_PORT_RANGE (NAT_PORT_MAX - NAT_PORT_MIN + 1)
#define NAT_TRIES 32

/* nat_egress_of returns the key of the NAT_EGRESS entry that the
 * NAT_INGRESS entry rk (whose value is rne) belongs to. */
static __always_inline struct tuple nat_egress_of(struct tuple *rk, struct nat_entry *rne)
{
	struct tuple ek = {
		.saddr = rne->to_addr, .daddr = rk->saddr,
		.sport = rne->to_port,
		.dport = rk->proto == IPPROTO_ICMP ? 0 : rk->sport,
		.proto = rk->proto, .dir = NAT_EGRESS,
	};
	return ek;
}

/* nat_owner returns the live NAT_EGRESS entry the ingress entry rk
 * (value rne) translates for, or 0 when that flow is over: expired, its
 * egress entry gone (LRU) or translated to another port. */
static __always_inline struct nat_entry *nat_owner(struct tuple *rk, struct nat_entry *rne, __u64 now)
{
	struct tuple ek = nat_egress_of(rk, rne);
	struct nat_entry *ne = bpf_map_lookup_elem(&glia_nat, &ek);

	if (!ne || ne->to_addr != rk->daddr || ne->to_port != rk->dport ||
	    ct_expired(ne->last_seen, rk->proto, ne->flags, now))
		return 0;
	return ne;
}

/* nat_reclaim frees the port of ingress entry rk unless a live flow holds
 * it; the egress entry of an expired flow goes with it. Returns 1 when
 * the port is free. */
static __always_inline int nat_reclaim(struct tuple *rk, __u64 now)
{
	struct nat_entry *rne = bpf_map_lookup_elem(&glia_nat, rk), *ne;
	struct tuple ek;

	if (!rne)
		return 1;
	ek = nat_egress_of(rk, rne);
	ne = bpf_map_lookup_elem(&glia_nat, &ek);
	if (ne && ne->to_addr == rk->daddr && ne->to_port == rk->dport) {
		if (!ct_expired(ne->last_seen, rk->proto, ne->flags, now))
			return 0;
		bpf_map_delete_elem(&glia_nat, &ek);
	}
	bpf_map_delete_elem(&glia_nat, rk);
	return 1;
}

/* node_port_taken says whether a TCP socket of the node holds port on the
 * node's address `node` towards p's destination: a connection the node
 * itself opened (or accepted) from that port. A listener does not count:
 * the replies of a translated flow are translated before they reach it. */
static __always_inline int node_port_taken(struct __sk_buff *ctx, struct pkt *p, __be32 node, __be16 port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	int taken;

	t.ipv4.saddr = p->daddr;
	t.ipv4.daddr = node;
	t.ipv4.sport = p->dport;
	t.ipv4.dport = port;
	sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	taken = sk->state != BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return taken;
}

/* snat allocates (or finds) a translation of p's source to `to` and
 * rewrites the packet. A flow keeps its translation while its entry
 * lives; an expired one, or a SYN on a closing one, gets a new
 * translation, and the port of a flow that is over can be given to
 * another. Returns 0, or a negative value when no port is free or the
 * rewrite failed. */
static __always_inline int snat(struct __sk_buff *ctx, struct pkt *p, __be32 to)
{
	struct tuple ek = {
		.saddr = p->saddr, .daddr = p->daddr,
		.sport = p->sport, .dport = p->dport,
		.proto = p->proto, .dir = NAT_EGRESS,
	};
	/* The reply carries our port as its destination; for ICMP echo the
	 * identifier travels in the same field both ways. */
	struct tuple rk = {
		.saddr = p->daddr, .daddr = to,
		.sport = p->proto == IPPROTO_ICMP ? 0 : p->dport,
		.proto = p->proto, .dir = NAT_INGRESS,
	};
	struct nat_entry *ne, *rne, fwd = {}, rev = {};
	__u64 now = bpf_ktime_get_ns();
	__be16 port = 0;
	__u32 h, i;

	ne = bpf_map_lookup_elem(&glia_nat, &ek);
	if (ne && ne->to_addr == to && ct_continues(ne->last_seen, ne->flags, p, now)) {
		int touched = nat_touch(ne, p, 0, now);

		port = ne->to_port;
		if (touched || tcp_syn_only(p)) {
			/* its ingress entry must still lead back here */
			rk.dport = port;
			rne = bpf_map_lookup_elem(&glia_nat, &rk);
			if (!rne || rne->to_addr != p->saddr || rne->to_port != p->sport)
				port = 0;
			else if (touched) {
				rne->flags = ne->flags;
				rne->last_seen = ne->last_seen;
			}
		}
	}
	if (!port) {
		/* A new flow, or this tuple's earlier one is over: release
		 * the port the earlier one held. */
		if (ne) {
			struct tuple ok = rk;

			ok.daddr = ne->to_addr;
			ok.dport = ne->to_port;
			rne = bpf_map_lookup_elem(&glia_nat, &ok);
			if (rne && rne->to_addr == p->saddr && rne->to_port == p->sport)
				bpf_map_delete_elem(&glia_nat, &ok);
		}
		/* A flow keeps its own port when it is in the NAT range (and
		 * free); ICMP identifiers are not ports, any is kept. So does a
		 * TCP flow met mid-way — no entry, and no SYN: a connection the
		 * kernel's MASQUERADE carried until a switch (which keeps a
		 * pod's port where it can), or one whose entry was evicted —
		 * whatever its port, unless a connection of the node's own
		 * holds that port towards the same peer: a new port would
		 * reset it. */
		__be16 orig = p->sport;
		__u16 horig = bpf_ntohs(orig);
		int keep = p->proto == IPPROTO_ICMP || (horig >= NAT_PORT_MIN && horig <= NAT_PORT_MAX) ||
			   (p->proto == IPPROTO_TCP && !(p->tcp_flags & TCP_FLAG_SYN) && !node_port_taken(ctx, p, to, orig));

		fwd.to_addr = to;
		nat_touch(&fwd, p, 0, now);
		rev.last_seen = fwd.last_seen;
		rev.flags = fwd.flags;
		rev.to_addr = p->saddr;
		rev.to_port = p->sport;
		h = hash_tuple(p->saddr, p->daddr, p->sport, p->dport, p->proto);
		for (i = 0; i < NAT_TRIES; i++) {
			__be16 cand = orig;
			if (i > 0 || !keep)
				cand = bpf_htons(NAT_PORT_MIN + mix32(h + i) % NAT_PORT_RANGE);
			rk.dport = cand;
			if (bpf_map_update_elem(&glia_nat, &rk, &rev, BPF_NOEXIST) == 0) {
				port = cand;
				break;
			}
			/* taken: by a live flow, or by one that is over */
			if (nat_reclaim(&rk, now) && bpf_map_update_elem(&glia_nat, &rk, &rev, BPF_NOEXIST) == 0) {
				port = cand;
				break;
			}
		}
		if (!port)
			return -1;
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

/* snat_continue translates p by the live egress entry of its flow, if
 * there is one, and creates none: where iptables masquerades, a flow glia
 * translated before the switch keeps glia's translation (which the agent
 * handed to the kernel's conntrack too) when one of its packets reaches
 * the device without the stack's NAT — from a pod whose program still
 * redirects past the stack. Returns 1 when translated, 0 when not, <0 on
 * error. */
static __always_inline int snat_continue(struct __sk_buff *ctx, struct pkt *p, __be32 to)
{
	struct tuple ek = {
		.saddr = p->saddr, .daddr = p->daddr,
		.sport = p->sport, .dport = p->dport,
		.proto = p->proto, .dir = NAT_EGRESS,
	};
	struct nat_entry *ne = bpf_map_lookup_elem(&glia_nat, &ek);
	__u64 now = bpf_ktime_get_ns();

	if (!ne || ne->to_addr != to || !ct_continues(ne->last_seen, ne->flags, p, now))
		return 0;
	nat_touch(ne, p, 0, now);
	if (set_addr(ctx, p, 1, to) < 0 || set_port(ctx, p, 1, ne->to_port) < 0)
		return -1;
	return 1;
}

/* rev_snat translates a packet arriving for the node's address back to the
 * endpoint that opened the flow: a reply, or an ICMP error about a packet
 * we translated. Only a live flow's ingress entry translates; one whose
 * flow is over is deleted. Returns 1 when translated, 0 when not ours, <0
 * on error. */
static __always_inline int rev_snat(struct __sk_buff *ctx, struct pkt *p)
{
	struct tuple rk = { .dir = NAT_INGRESS };
	struct nat_entry *ne, *rne;
	__u64 now = bpf_ktime_get_ns();

	if (p->icmp_err) {
		/* the quote is our translated packet: node:port -> remote */
		rk.saddr = p->in_daddr;
		rk.daddr = p->in_saddr;
		rk.sport = p->in_dport;
		rk.dport = p->in_sport;
		rk.proto = p->in_proto;
		rne = bpf_map_lookup_elem(&glia_nat, &rk);
		if (!rne || !nat_owner(&rk, rne, now))
			return 0;
		if (set_inner(ctx, p, 1, rne->to_addr, rne->to_port) < 0 ||
		    set_addr(ctx, p, 0, rne->to_addr) < 0)
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
	rne = bpf_map_lookup_elem(&glia_nat, &rk);
	if (!rne)
		return 0;
	ne = nat_owner(&rk, rne, now);
	if (!ne) {
		bpf_map_delete_elem(&glia_nat, &rk);
		return 0;
	}
	if (nat_touch(ne, p, 1, now)) {
		rne->flags = ne->flags;
		rne->last_seen = ne->last_seen;
	}
	if (set_addr(ctx, p, 0, rne->to_addr) < 0 || set_port(ctx, p, 0, rne->to_port) < 0)
		return -1;
	return 1;
}

/* note_inbound remembers that a remote outside the cluster opened a flow to
 * a local pod, so that the pod's replies keep its address (they are not a
 * flow to masquerade). The entry is keyed by the pod's direction and
 * lives as a CT entry does. */
static __always_inline void note_inbound(struct pkt *p)
{
	struct tuple k = {
		.saddr = p->daddr, .daddr = p->saddr,
		.sport = p->dport, .dport = p->sport,
		.proto = p->proto, .dir = CT_INBOUND,
	};
	struct ct_entry *ct, e = {};
	__u64 now = bpf_ktime_get_ns();

	ct = bpf_map_lookup_elem(&glia_ct, &k);
	if (ct && ct_continues(ct->last_seen, ct->flags, p, now)) {
		ct_touch(ct, p, 0, now);
		return;
	}
	ct_touch(&e, p, 0, now);
	bpf_map_update_elem(&glia_ct, &k, &e, BPF_ANY);
}

/* is_inbound_reply says whether p, from a local pod, belongs to a live
 * flow a remote opened. A SYN from the pod opens a flow of its own: the
 * inbound entry of that tuple is over. */
static __always_inline int is_inbound_reply(struct pkt *p)
{
	struct tuple k = {
		.saddr = p->saddr, .daddr = p->daddr,
		.sport = p->sport, .dport = p->dport,
		.proto = p->proto, .dir = CT_INBOUND,
	};
	struct ct_entry *ct = bpf_map_lookup_elem(&glia_ct, &k);
	__u64 now = bpf_ktime_get_ns();

	if (!ct)
		return 0;
	if (ct_expired(ct->last_seen, p->proto, ct->flags, now) || tcp_syn_only(p)) {
		bpf_map_delete_elem(&glia_ct, &k);
		return 0;
	}
	ct_touch(ct, p, 1, now);
	return 1;
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
	if (!ne || ct_expired(ne->last_seen, ek.proto, ne->flags, bpf_ktime_get_ns()))
		return 0;
	if (set_inner(ctx, p, 0, ne->to_addr, ne->to_port) < 0 ||
	    set_addr(ctx, p, 1, ne->to_addr) < 0)
		return -1;
	return 1;
}

#endif
