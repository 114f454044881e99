/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Kubernetes NetworkPolicy, enforced at each pod's interface whatever the
 * host routing mode. A packet's peer is an identity found by address
 * (glia_ipcache, longest prefix); a local endpoint's policy (glia_ep_policy)
 * names its allow entries in glia_policy, keyed by (policy, direction,
 * peer identity or any, protocol or any, port prefix). Allowed flows are
 * tracked (glia_policy_ct): later packets and replies pay one lookup;
 * a change of the maps (glia_policy_state.revision) has every tracked
 * flow decided again by its next packet. Traffic between a pod and its
 * own node (the host identity) is always allowed.
 *
 * Egress to a Service when kube-proxy translates it (no kube-proxy
 * replacement) is decided after the translation: at the pod's interface
 * the packet is marked with the pod's policy (skb->mark) and the program
 * of the interface it leaves by (to_container, to_netdev) decides on the
 * backend chosen. Replies come back translated to the Service's address,
 * which the flow's pre-translation entry allows.
 *
 * Until the agent has computed the node's policy once
 * (POLICY_F_READY), nothing is enforced: a node upgraded from a glia
 * without policy keeps its traffic. After that the state is pinned and
 * enforced whatever the agent does: an unknown local endpoint is denied. */
#ifndef __GLIA_POLICY_H
#define __GLIA_POLICY_H

#include "common.h"
#include "pkt.h"

#define IPPROTO_SCTP 132

#define POL_INGRESS 0
#define POL_EGRESS 1

#define IDENTITY_ANY 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2
#define IDENTITY_REMOTE_NODE 6

/* the verdicts of the policy functions */
#define POL_ALLOW 0
#define POL_DENY -1

/* skb->mark of a packet whose egress decision waits for the Service
 * translation: POL_MARK_PENDING in the low bits, the policy number in the
 * high 16. */
#define POL_MARK_MASK 0x0f00
#define POL_MARK_PENDING 0x0e00

/* ---- address -> identity ---- */
struct ipcache_key {
	__u32 prefixlen;
	__u8 addr[4];
};

#define IPC_F_NODE (1 << 0) /* a node's address */

struct ipcache_value {
	__u32 identity;
	__u32 flags; /* IPC_F_* */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_ipcache SEC(".maps");

/* ---- allow entries ---- */
/* data, big endian, matched by prefix: policy (16 bits), direction (8),
 * peer identity (32), protocol (8), port (16) */
#define POLICY_KEY_BITS 80
#define POLICY_KEY_PROTO_BITS 64 /* policy, direction and peer */
struct policy_key {
	__u32 prefixlen;
	__u8 data[10];
	__u16 pad;
};

struct policy_value {
	__u32 rule; /* the rule that allows it (the agent's numbering) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_policy SEC(".maps");

/* ---- local endpoints ---- */
struct ep_policy_key {
	__be32 addr;
};

#define EP_F_INGRESS (1 << 0) /* isolated for ingress */
#define EP_F_EGRESS (1 << 1)  /* isolated for egress */

struct ep_policy {
	__u16 policy; /* 0: no allow entries */
	__u16 flags;  /* EP_F_* */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ep_policy_key);
	__type(value, struct ep_policy);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_ep_policy SEC(".maps");

/* ---- tracked flows ---- */
struct pol_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* POL_INGRESS: the endpoint is daddr; POL_EGRESS: saddr */
	__u16 pad;
};

#define POL_CT_DEFERRED (1 << 0) /* a Service flow decided after translation */
#define POL_CT_CLOSING (1 << 1)  /* FIN or RST seen */
#define POL_CT_ESTABLISHED (1 << 2) /* a TCP segment without SYN passed */

struct pol_ct {
	__u64 last_seen;
	__u32 revision; /* glia_policy_state.revision when decided */
	__u16 flags;    /* POL_CT_* */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct pol_tuple);
	__type(value, struct pol_ct);
	__uint(max_entries, 131072);
} glia_policy_ct SEC(".maps");

/* ---- node-wide state, written by the agent ---- */
#define POLICY_F_READY (1 << 0)

struct policy_state {
	__u32 revision;
	__u32 flags;    /* POLICY_F_* */
	__be32 svc_net; /* the Service range, for egress decided after translation */
	__be32 svc_mask;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_state);
	__uint(max_entries, 1);
} glia_policy_state SEC(".maps");

/* ---- drops: [0] ingress denied, [1] egress denied ---- */
struct policy_count {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_count);
	__uint(max_entries, 2);
} glia_policy_drops SEC(".maps");

static __always_inline int policy_drop(struct __sk_buff *ctx, __u32 dir)
{
	struct policy_count *c = bpf_map_lookup_elem(&glia_policy_drops, &dir);

	if (c) {
		c->packets++;
		c->bytes += ctx->len;
	}
	return TC_ACT_SHOT;
}

/* lifetimes (seconds), as bpf/lib/ct.h's */
#define POL_CT_TCP 21600
#define POL_CT_TCP_SYN 60
#define POL_CT_TCP_CLOSE 10
#define POL_CT_OTHER 60
#define POL_NSEC 1000000000ULL

static __always_inline int pol_ct_expired(struct pol_ct *ct, __u8 proto, __u64 now)
{
	__u64 s = POL_CT_OTHER;

	if (proto == IPPROTO_TCP) {
		if (ct->flags & POL_CT_CLOSING)
			s = POL_CT_TCP_CLOSE;
		else if (ct->flags & POL_CT_ESTABLISHED)
			s = POL_CT_TCP;
		else
			s = POL_CT_TCP_SYN;
	}
	return now - ct->last_seen > s * POL_NSEC;
}

/* pol_ct_touch refreshes an entry: at most one write a second unless its
 * state changes. */
static __always_inline void pol_ct_touch(struct pol_ct *ct, struct pkt *p, __u32 rev, __u64 now)
{
	__u16 flags = ct->flags;

	if (p->proto == IPPROTO_TCP) {
		if (!(p->tcp_flags & TCP_FLAG_SYN))
			flags |= POL_CT_ESTABLISHED;
		if (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
			flags |= POL_CT_CLOSING;
	}
	if (flags == ct->flags && rev == ct->revision && now - ct->last_seen < POL_NSEC)
		return;
	ct->flags = flags;
	ct->revision = rev;
	ct->last_seen = now;
}

static __always_inline struct policy_state *policy_state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&glia_policy_state, &zero);
}

static __always_inline struct ipcache_value *ipcache_lookup(__be32 addr)
{
	struct ipcache_key k = { .prefixlen = 32 };

	__builtin_memcpy(k.addr, &addr, 4);
	return bpf_map_lookup_elem(&glia_ipcache, &k);
}

static __always_inline __u32 peer_identity(__be32 addr)
{
	struct ipcache_value *v = ipcache_lookup(addr);

	return v ? v->identity : IDENTITY_WORLD;
}

static __always_inline int policy_entry(__u16 pol, __u8 dir, __u32 peer, __u8 proto, __be16 port)
{
	struct policy_key k = { .prefixlen = POLICY_KEY_BITS };
	__u32 be = bpf_htonl(peer);

	k.data[0] = pol >> 8;
	k.data[1] = pol & 0xff;
	k.data[2] = dir;
	__builtin_memcpy(&k.data[3], &be, 4);
	k.data[7] = proto;
	__builtin_memcpy(&k.data[8], &port, 2);
	return bpf_map_lookup_elem(&glia_policy, &k) != 0;
}

/* policy_allows looks the allow entries of policy pol up for a peer, then
 * for any peer. */
static __always_inline int policy_allows(__u16 pol, __u8 dir, __u32 peer, __u8 proto, __be16 port)
{
	if (peer == IDENTITY_HOST)
		return 1; /* the endpoint's own node */
	if (!pol)
		return 0;
	if (policy_entry(pol, dir, peer, proto, port))
		return 1;
	return policy_entry(pol, dir, IDENTITY_ANY, proto, port);
}

/* pol_ports fills the ports of protocols parse() does not know (SCTP). */
static __always_inline void pol_ports(struct __sk_buff *ctx, struct pkt *p)
{
	__be16 ports[2];

	if (p->proto != IPPROTO_SCTP || p->has_l4)
		return;
	if (bpf_skb_load_bytes(ctx, p->l4_off, ports, sizeof(ports)) < 0)
		return;
	p->sport = ports[0];
	p->dport = ports[1];
}

/* The port a new flow is decided on: the destination port (none for
 * ICMP: an ICMP flow matches only rules without ports). */
static __always_inline __be16 pol_port(struct pkt *p)
{
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP)
		return p->dport;
	return 0;
}

static __always_inline struct pol_tuple pol_key(struct pkt *p, __u8 dir, int reverse)
{
	struct pol_tuple t = { .proto = p->proto, .dir = dir };

	if (reverse) {
		t.saddr = p->daddr;
		t.daddr = p->saddr;
		t.sport = p->dport;
		t.dport = p->sport;
	} else {
		t.saddr = p->saddr;
		t.daddr = p->daddr;
		t.sport = p->sport;
		t.dport = p->dport;
	}
	return t;
}

/* pol_decide decides a new flow of endpoint ep in dir with the peer at
 * peer_addr, on p's protocol and port. */
static __always_inline int pol_decide(struct ep_policy *ep, __u8 dir, __be32 peer_addr, struct pkt *p)
{
	__u16 isolated = dir == POL_INGRESS ? EP_F_INGRESS : EP_F_EGRESS;

	if (!(ep->flags & isolated))
		return 1;
	return policy_allows(ep->policy, dir, peer_identity(peer_addr), p->proto, pol_port(p));
}

/* pol_related says whether an ICMP error is about a tracked flow. */
static __always_inline int pol_related(struct pkt *p)
{
	struct pol_tuple t = { .proto = p->in_proto };

	t.saddr = p->in_saddr;
	t.daddr = p->in_daddr;
	t.sport = p->in_sport;
	t.dport = p->in_dport;
	for (int d = 0; d < 2; d++) {
		t.dir = d;
		if (bpf_map_lookup_elem(&glia_policy_ct, &t))
			return 1;
	}
	t.saddr = p->in_daddr;
	t.daddr = p->in_saddr;
	t.sport = p->in_dport;
	t.dport = p->in_sport;
	for (int d = 0; d < 2; d++) {
		t.dir = d;
		if (bpf_map_lookup_elem(&glia_policy_ct, &t))
			return 1;
	}
	return 0;
}

/* policy_check decides a packet of local endpoint ep_addr in dir
 * (POL_EGRESS: sent by it, POL_INGRESS: to it): a tracked flow of the
 * endpoint, or the reply of one, passes (decided again when the maps
 * changed since); a new flow is decided and, when allowed, tracked.
 * defer: for egress, leave the decision to after the Service translation
 * (mark the packet). Returns POL_ALLOW or POL_DENY. */
static __always_inline int policy_check(struct __sk_buff *ctx, struct pkt *p, __u8 dir, int defer)
{
	struct policy_state *st = policy_state();
	struct ep_policy_key ek = {};
	struct pol_tuple fk, rk;
	struct pol_ct *ct, fresh = {};
	struct ep_policy *ep;
	__be32 peer;
	__u64 now;

	if (!st || !(st->flags & POLICY_F_READY))
		return POL_ALLOW;
	ek.addr = dir == POL_EGRESS ? p->saddr : p->daddr;
	peer = dir == POL_EGRESS ? p->daddr : p->saddr;
	ep = bpf_map_lookup_elem(&glia_ep_policy, &ek);
	if (!ep)
		return POL_DENY; /* an endpoint the agent has not given a policy */
	pol_ports(ctx, p);
	if (p->icmp_err)
		return pol_related(p) || !(ep->flags & (dir == POL_INGRESS ? EP_F_INGRESS : EP_F_EGRESS)) ? POL_ALLOW : POL_DENY;

	now = bpf_ktime_get_ns();
	fk = pol_key(p, dir, 0);
	ct = bpf_map_lookup_elem(&glia_policy_ct, &fk);
	if (ct && !pol_ct_expired(ct, p->proto, now)) {
		if (ct->flags & POL_CT_DEFERRED) {
			ctx->mark = (ctx->mark & ~(0xffff0000 | POL_MARK_MASK)) | ((__u32)ep->policy << 16) | POL_MARK_PENDING;
		} else if (ct->revision != st->revision && !pol_decide(ep, dir, peer, p)) {
			bpf_map_delete_elem(&glia_policy_ct, &fk);
			return POL_DENY;
		}
		pol_ct_touch(ct, p, st->revision, now);
		return POL_ALLOW;
	}
	/* the reply of a flow the other side of the endpoint opened */
	rk = pol_key(p, dir == POL_EGRESS ? POL_INGRESS : POL_EGRESS, 1);
	ct = bpf_map_lookup_elem(&glia_policy_ct, &rk);
	if (ct && !pol_ct_expired(ct, p->proto, now)) {
		if (!(ct->flags & POL_CT_DEFERRED) && ct->revision != st->revision) {
			/* decide the flow again, in its own direction */
			struct pkt q = *p;

			q.saddr = p->daddr;
			q.daddr = p->saddr;
			q.sport = p->dport;
			q.dport = p->sport;
			if (!pol_decide(ep, rk.dir, peer, &q)) {
				bpf_map_delete_elem(&glia_policy_ct, &rk);
				return POL_DENY;
			}
		}
		pol_ct_touch(ct, p, st->revision, now);
		return POL_ALLOW;
	}
	/* a new flow */
	if (defer && dir == POL_EGRESS && (ep->flags & EP_F_EGRESS)) {
		fresh.flags = POL_CT_DEFERRED;
		ctx->mark = (ctx->mark & ~(0xffff0000 | POL_MARK_MASK)) | ((__u32)ep->policy << 16) | POL_MARK_PENDING;
	} else if (!pol_decide(ep, dir, peer, p)) {
		return POL_DENY;
	}
	pol_ct_touch(&fresh, p, st->revision, now);
	fresh.last_seen = now;
	bpf_map_update_elem(&glia_policy_ct, &fk, &fresh, BPF_ANY);
	return POL_ALLOW;
}

/* policy_deferred decides, where a packet leaves the node's stack (a pod
 * interface's egress, the node device's), the egress of a Service flow
 * whose pod marked it: on the backend the translation chose. */
static __always_inline int policy_deferred(struct __sk_buff *ctx, struct pkt *p)
{
	struct policy_state *st;
	struct pol_tuple fk;
	struct pol_ct *ct, fresh = {};
	__u16 pol;
	__u64 now;

	if ((ctx->mark & POL_MARK_MASK) != POL_MARK_PENDING)
		return POL_ALLOW;
	pol = ctx->mark >> 16;
	ctx->mark &= ~(0xffff0000 | POL_MARK_MASK);
	st = policy_state();
	if (!st || !(st->flags & POLICY_F_READY))
		return POL_ALLOW;
	pol_ports(ctx, p);
	if (p->icmp_err)
		return POL_ALLOW; /* about a flow whose packets were decided */
	now = bpf_ktime_get_ns();
	fk = pol_key(p, POL_EGRESS, 0);
	ct = bpf_map_lookup_elem(&glia_policy_ct, &fk);
	if (ct && !pol_ct_expired(ct, p->proto, now) && ct->revision == st->revision) {
		pol_ct_touch(ct, p, st->revision, now);
		return POL_ALLOW;
	}
	if (!policy_allows(pol, POL_EGRESS, peer_identity(p->daddr), p->proto, pol_port(p))) {
		if (ct)
			bpf_map_delete_elem(&glia_policy_ct, &fk);
		return POL_DENY;
	}
	if (ct) {
		pol_ct_touch(ct, p, st->revision, now);
		return POL_ALLOW;
	}
	pol_ct_touch(&fresh, p, st->revision, now);
	fresh.last_seen = now;
	bpf_map_update_elem(&glia_policy_ct, &fk, &fresh, BPF_ANY);
	return POL_ALLOW;
}

/* policy_defer says whether an egress decision waits for a Service
 * translation the stack does (kube-proxy): to a Service address, or to a
 * node address (a NodePort). */
static __always_inline int policy_defer(struct pkt *p, int translated_here)
{
	struct policy_state *st;
	struct ipcache_value *v;

	if (translated_here)
		return 0;
	st = policy_state();
	if (st && st->svc_mask && (p->daddr & st->svc_mask) == st->svc_net)
		return 1;
	v = ipcache_lookup(p->daddr);
	return v && (v->flags & IPC_F_NODE);
}

#endif
