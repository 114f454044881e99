/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service load balancing: frontend lookup, backend selection (random or
 * maglev), DNAT with connection tracking, reverse DNAT of replies, and the
 * reject of connections to a Service without backends. */
#ifndef __GLIA_LB_H
#define __GLIA_LB_H

#include "common.h"
#include "maps.h"
#include "pkt.h"
#include "nat.h"
#include "ct.h"

#define LB_CONTINUE -1

static __always_inline struct svc_value *lb_lookup(struct pkt *p, __be32 addr, __u8 scope)
{
	struct svc_key k = {
		.addr = addr, .port = p->dport, .proto = p->proto, .scope = scope,
	};
	if (!p->has_l4 || p->icmp_err || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP))
		return 0;
	return bpf_map_lookup_elem(&glia_services, &k);
}

/* affinity_backend returns the backend a client of an affine service
 * keeps, or 0. */
static __always_inline __u32 affinity_backend(struct svc_value *svc, struct pkt *p, __u64 now)
{
	struct affinity_key ak = { .svc_id = svc->id, .client = p->saddr };
	struct affinity_value *av;

	if (!(svc->flags & SVC_F_AFFINITY))
		return 0;
	av = bpf_map_lookup_elem(&glia_affinity, &ak);
	if (!av || now - av->last_seen > AFFINITY_TIMEOUT_NS)
		return 0;
	if (!bpf_map_lookup_elem(&glia_backends, &av->backend_id))
		return 0;
	return av->backend_id;
}

static __always_inline void affinity_update(struct svc_value *svc, struct pkt *p, __u32 bid, __u64 now)
{
	struct affinity_key ak = { .svc_id = svc->id, .client = p->saddr };
	struct affinity_value av = { .last_seen = now, .backend_id = bid };

	if (svc->flags & SVC_F_AFFINITY)
		bpf_map_update_elem(&glia_affinity, &ak, &av, BPF_ANY);
}

/* lb_select picks a backend id for a new flow, or 0. */
static __always_inline __u32 lb_select(struct svc_value *svc, struct pkt *p)
{
	struct slot_key k = { .svc_id = svc->id };
	__u32 *id;

	if (svc->count == 0)
		return 0;
	if (svc->flags & SVC_F_MAGLEV) {
		k.slot = svc->slot_base + hash_tuple(p->saddr, p->daddr, p->sport, p->dport, p->proto) % MAGLEV_M;
		id = bpf_map_lookup_elem(&glia_maglev, &k);
	} else {
		k.slot = svc->slot_base + 1 + bpf_get_prandom_u32() % svc->count;
		id = bpf_map_lookup_elem(&glia_svc_slots, &k);
	}
	return id ? *id : 0;
}

struct rst_pkt {
	struct ethhdr eth;
	struct iphdr ip;
	struct tcphdr tcp;
} __attribute__((packed));

struct tcp_pseudo {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
	struct tcphdr tcp;
};

/* send_rst turns a TCP segment into the RST|ACK that answers it and sends it
 * back out of the interface it came in on. */
static __always_inline int send_rst(struct __sk_buff *ctx, struct pkt *p)
{
	struct rst_pkt in, out = {};
	struct tcp_pseudo ph = {};
	struct iphdr iph = {};
	__u32 payload, ihl, doff;
	__s64 sum;

	if (bpf_skb_load_bytes(ctx, 0, &in.eth, sizeof(in.eth)) < 0 ||
	    bpf_skb_load_bytes(ctx, ETH_HLEN, &in.ip, sizeof(in.ip)) < 0 ||
	    bpf_skb_load_bytes(ctx, p->l4_off, &in.tcp, sizeof(in.tcp)) < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	ihl = (in.ip.ihl_version & 0xf) * 4;
	doff = (in.tcp.doff_res >> 4) * 4;
	payload = p->tot_len - ihl - doff;
	if (p->tot_len < ihl + doff)
		payload = 0;
	if (in.tcp.flags & TCP_FLAG_SYN)
		payload++;
	if (in.tcp.flags & TCP_FLAG_FIN)
		payload++;

	__builtin_memcpy(out.eth.h_dest, in.eth.h_source, ETH_ALEN);
	__builtin_memcpy(out.eth.h_source, in.eth.h_dest, ETH_ALEN);
	out.eth.h_proto = bpf_htons(ETH_P_IP);
	iph.ihl_version = 0x45;
	iph.tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct tcphdr));
	iph.frag_off = bpf_htons(0x4000);
	iph.ttl = 64;
	iph.protocol = IPPROTO_TCP;
	iph.saddr = in.ip.daddr;
	iph.daddr = in.ip.saddr;
	sum = bpf_csum_diff(0, 0, (__be32 *)&iph, sizeof(iph), 0);
	if (sum < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	iph.check = csum_fold(sum);
	out.ip = iph;

	out.tcp.source = in.tcp.dest;
	out.tcp.dest = in.tcp.source;
	if (in.tcp.flags & TCP_FLAG_ACK)
		out.tcp.seq = in.tcp.ack_seq;
	out.tcp.ack_seq = bpf_htonl(bpf_ntohl(in.tcp.seq) + payload);
	out.tcp.doff_res = 0x50;
	out.tcp.flags = TCP_FLAG_RST | TCP_FLAG_ACK;
	ph.saddr = iph.saddr;
	ph.daddr = iph.daddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(struct tcphdr));
	ph.tcp = out.tcp;
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	if (sum < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	out.tcp.check = csum_fold(sum);

	if (bpf_skb_change_tail(ctx, sizeof(out), 0) < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	if (bpf_skb_store_bytes(ctx, 0, &out, sizeof(out), 0) < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	count(ctx, METRIC_REJECT_RST);
	return bpf_redirect(ctx->ifindex, 0);
}

static __always_inline int lb_reject(struct __sk_buff *ctx, struct pkt *p)
{
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN)
		return send_rst(ctx, p);
	return drop(ctx, METRIC_DROP_NO_BACKEND);
}

static __always_inline int is_local_endpoint(__be32 addr)
{
	struct endpoint_key k = { .addr = addr };
	return bpf_map_lookup_elem(&glia_endpoints, &k) != 0;
}

/* What a frontend was reached as, and from where (lb_forward's kind). */
#define LB_CLUSTER_IP 0    /* a ClusterIP, from a local pod */
#define LB_NODEPORT 1      /* a NodePort of this node, from its device */
#define LB_NODEPORT_POD 2  /* a NodePort of a node's address, from a local pod */

/* is_node_addr says whether addr is this node's address or another
 * node's of the cluster. */
static __always_inline int is_node_addr(__be32 addr)
{
	struct node_key k = { .addr = addr };

	return addr == node_ip() || bpf_map_lookup_elem(&glia_node_ips, &k) != 0;
}

/* lb_may_open says whether p may open a Service flow, or continue one:
 * a TCP segment other than a SYN only continues a tracked flow. Used for
 * NodePorts reached by pods, whose port may also be the port of a client
 * the pod answers (a node process bound to it). */
static __always_inline int lb_may_open(struct pkt *p)
{
	struct tuple fk = {
		.saddr = p->saddr, .daddr = p->daddr,
		.sport = p->sport, .dport = p->dport,
		.proto = p->proto, .dir = CT_SERVICE,
	};
	struct ct_entry *ct;

	if (p->proto != IPPROTO_TCP || (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		return 1;
	ct = bpf_map_lookup_elem(&glia_ct, &fk);
	return ct && !ct_expired(ct->last_seen, p->proto, ct->flags, bpf_ktime_get_ns());
}

/* ct_reply_owner returns the live forward entry that reply entry rk
 * (value rct) belongs to, or 0 when that flow is over: expired, gone, or
 * replaced by a flow of another backend or service. */
static __always_inline struct ct_entry *ct_reply_owner(struct tuple *rk, struct ct_entry *rct, __u64 now)
{
	struct tuple fk = {
		.saddr = rct->rev_daddr ? rct->rev_daddr : rk->daddr,
		.daddr = rct->rev_saddr,
		.sport = rk->dport, .dport = rct->rev_sport,
		.proto = rk->proto, .dir = CT_SERVICE,
	};
	struct ct_entry *ct = bpf_map_lookup_elem(&glia_ct, &fk);

	if (!ct || ct->backend_id != rct->backend_id || ct->svc_id != rct->svc_id ||
	    ct_expired(ct->last_seen, rk->proto, ct->flags, now))
		return 0;
	return ct;
}

/* lb_direct_syn: a pod opens a connection to an address that is not a
 * frontend, from a port whose closing (or finished) Service flow went to
 * that very address. The replies of the new connection are not the old
 * flow's: its reply entry goes, so they reach the pod untranslated. A
 * live Service flow with the same tuple is left alone. */
static __always_inline void lb_direct_syn(struct pkt *p)
{
	struct tuple rk = {
		.saddr = p->daddr, .daddr = p->saddr,
		.sport = p->dport, .dport = p->sport,
		.proto = p->proto, .dir = CT_REPLY,
	};
	struct ct_entry *rct, *ct;

	if (!tcp_syn_only(p))
		return;
	rct = bpf_map_lookup_elem(&glia_ct, &rk);
	if (!rct)
		return;
	ct = ct_reply_owner(&rk, rct, bpf_ktime_get_ns());
	if (ct && !ct_closing(ct->flags))
		return;
	bpf_map_delete_elem(&glia_ct, &rk);
}

/* lb_forward load-balances a packet to a Service frontend: an existing flow
 * keeps its backend, a new one gets a backend and CT entries. The packet is
 * DNATed (and SNATed for hairpin and, from the node's device, for remote
 * NodePort backends). A pod's flow keeps the pod's address whatever it
 * reached (its replies come back to this node anyway). Returns
 * LB_CONTINUE to go on routing, or a TC verdict. */
static __always_inline int lb_forward(struct __sk_buff *ctx, struct pkt *p, struct svc_value *svc, int kind)
{
	struct tuple fk = {
		.saddr = p->saddr, .daddr = p->daddr,
		.sport = p->sport, .dport = p->dport,
		.proto = p->proto, .dir = CT_SERVICE,
	};
	struct tuple rk = { .proto = p->proto, .dir = CT_REPLY };
	struct ct_entry *ct, *rct, fwd = {}, rev = {};
	__be32 client = p->saddr, frontend = p->daddr;
	__be16 client_port = p->sport, frontend_port = p->dport;
	__u16 kind_flags = kind != LB_CLUSTER_IP ? CT_F_NODEPORT : 0;
	struct backend *be = 0;
	__u64 now = bpf_ktime_get_ns();
	__u32 bid = 0;
	int hairpin, fresh = 0, touched;

	/* A live flow of this service keeps its backend while it is there;
	 * an expired entry, or a SYN on a closing one, is a new flow. */
	ct = bpf_map_lookup_elem(&glia_ct, &fk);
	if (ct && ct->svc_id == svc->id && ct_continues(ct->last_seen, ct->flags, p, now)) {
		bid = ct->backend_id;
		be = bpf_map_lookup_elem(&glia_backends, &bid);
	}
	if (be) {
		touched = ct_touch(ct, p, 0, now);
	} else {
		/* A new flow, or its backend is gone: pick one (the client's
		 * own with session affinity). */
		bid = svc->count ? affinity_backend(svc, p, now) : 0;
		if (!bid)
			bid = lb_select(svc, p);
		if (bid)
			be = bpf_map_lookup_elem(&glia_backends, &bid);
		if (!be)
			return lb_reject(ctx, p);
		affinity_update(svc, p, bid, now);
		fwd.backend_id = bid;
		fwd.svc_id = svc->id;
		fwd.flags = kind_flags;
		ct_touch(&fwd, p, 0, now);
		if (bpf_map_update_elem(&glia_ct, &fk, &fwd, BPF_ANY) < 0)
			return drop(ctx, METRIC_DROP_INVALID);
		ct = &fwd;
		fresh = 1;
		touched = 1;
	}

	hairpin = kind != LB_NODEPORT && be->addr == client;

	/* The reply entry of this flow: written anew for a new flow (an
	 * older flow's entry for the same backend tuple, of another
	 * frontend, must not translate its replies), refreshed with the
	 * flow's state otherwise. */
	rk.saddr = be->addr;
	rk.daddr = hairpin ? HAIRPIN_ADDR : client;
	rk.sport = be->port;
	rk.dport = client_port;
	rct = bpf_map_lookup_elem(&glia_ct, &rk);
	if (fresh || !rct || rct->backend_id != bid || rct->svc_id != svc->id ||
	    rct->rev_saddr != frontend || rct->rev_sport != frontend_port) {
		rev.backend_id = bid;
		rev.svc_id = svc->id;
		rev.rev_saddr = frontend;
		rev.rev_sport = frontend_port;
		rev.rev_daddr = hairpin ? client : 0;
		rev.flags = (hairpin ? CT_F_HAIRPIN : 0) | kind_flags;
		ct_mirror(&rev, ct);
		if (bpf_map_update_elem(&glia_ct, &rk, &rev, BPF_ANY) < 0)
			return drop(ctx, METRIC_DROP_INVALID);
	} else if (touched) {
		ct_mirror(rct, ct);
	}

	if (set_addr(ctx, p, 0, be->addr) < 0 || set_port(ctx, p, 0, be->port) < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	if (hairpin && set_addr(ctx, p, 1, HAIRPIN_ADDR) < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	if (kind == LB_NODEPORT && !is_local_endpoint(p->daddr)) {
		/* The backend is elsewhere: make its replies come back here. */
		if (snat(ctx, p, node_ip()) < 0)
			return drop(ctx, METRIC_DROP_NAT_NO_PORT);
	}
	return LB_CONTINUE;
}

/* rev_dnat restores the frontend as the source of a reply from a backend
 * (and the client as destination of a hairpinned reply), and translates
 * ICMP errors about load-balanced packets. Only the reply entry of a live
 * flow translates: one whose flow is over (expired, replaced, or closing
 * when a new connection's SYN-ACK comes) is deleted and the packet left
 * alone, for it belongs to a connection that reuses the tuple. Returns 1
 * when translated, 0 when not a service flow, <0 on error. */
static __always_inline int rev_dnat(struct __sk_buff *ctx, struct pkt *p)
{
	struct tuple rk = { .dir = CT_REPLY };
	struct ct_entry *ct, *rct;
	__u64 now = bpf_ktime_get_ns();

	if (p->icmp_err) {
		/* the quote is client -> backend, as we sent it */
		rk.saddr = p->in_daddr;
		rk.daddr = p->in_saddr;
		rk.sport = p->in_dport;
		rk.dport = p->in_sport;
		rk.proto = p->in_proto;
		rct = bpf_map_lookup_elem(&glia_ct, &rk);
		if (!rct || !ct_reply_owner(&rk, rct, now))
			return 0;
		if (p->saddr == p->in_daddr && set_addr(ctx, p, 1, rct->rev_saddr) < 0)
			return -1;
		if (set_inner(ctx, p, 0, rct->rev_saddr, rct->rev_sport) < 0)
			return -1;
		if (rct->rev_daddr) {
			if (set_inner(ctx, p, 1, rct->rev_daddr, 0) < 0 ||
			    set_addr(ctx, p, 0, rct->rev_daddr) < 0)
				return -1;
		}
		return 1;
	}
	if (!p->has_l4 || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP))
		return 0;
	rk.saddr = p->saddr;
	rk.daddr = p->daddr;
	rk.sport = p->sport;
	rk.dport = p->dport;
	rk.proto = p->proto;
	rct = bpf_map_lookup_elem(&glia_ct, &rk);
	if (!rct)
		return 0;
	ct = ct_reply_owner(&rk, rct, now);
	if (!ct || (p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_FLAG_SYN) && ct_closing(ct->flags))) {
		bpf_map_delete_elem(&glia_ct, &rk);
		return 0;
	}
	if (ct_touch(ct, p, 1, now))
		ct_mirror(rct, ct);
	if (set_addr(ctx, p, 1, rct->rev_saddr) < 0 || set_port(ctx, p, 1, rct->rev_sport) < 0)
		return -1;
	if (rct->rev_daddr && set_addr(ctx, p, 0, rct->rev_daddr) < 0)
		return -1;
	return 1;
}

#endif
