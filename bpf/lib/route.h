/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding without the host stack: into a local pod (redirect_peer), to
 * another node's pods through the VXLAN device, or to whatever the FIB says
 * (redirect / redirect_neigh). */
#ifndef __GLIA_ROUTE_H
#define __GLIA_ROUTE_H

#include "common.h"
#include "maps.h"
#include "pkt.h"

static __always_inline int redirect_endpoint(struct __sk_buff *ctx, struct endpoint_info *ep)
{
	if (set_macs(ctx, ep->pod_mac, ep->host_mac) < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	count(ctx, METRIC_REDIRECT);
	return bpf_redirect_peer(ep->ifindex, 0);
}

static __always_inline int dec_ttl(struct __sk_buff *ctx)
{
	__u8 ttl;
	if (bpf_skb_load_bytes(ctx, ETH_HLEN + 8, &ttl, 1) < 0)
		return -1;
	if (ttl <= 1)
		return -1;
	/* ttl is the high byte of the 16-bit word it shares with protocol */
	bpf_l3_csum_replace(ctx, IP_CSUM_OFF, bpf_htons((__u16)ttl << 8), bpf_htons((__u16)(ttl - 1) << 8), 2);
	ttl--;
	return bpf_skb_store_bytes(ctx, ETH_HLEN + 8, &ttl, 1, 0);
}

/* tunnel_node finds the node owning daddr's pod CIDR, or 0. */
static __always_inline struct tunnel_value *tunnel_node(__be32 daddr)
{
	struct tunnel_key tk = { .prefixlen = 32 };

	__builtin_memcpy(tk.addr, &daddr, 4);
	return bpf_map_lookup_elem(&glia_tunnel, &tk);
}

/* set_tunnel gives the packet the metadata the collect_md VXLAN device
 * encapsulates with: VNI, the remote node, and this node's address as
 * the outer source. The outer source must be explicit: left 0, the
 * packets left with the remote's own address as source (seen on 6.18),
 * and the remote dropped them as IP_LOCAL_SOURCE. */
static __always_inline int set_tunnel(struct __sk_buff *ctx, __be32 remote)
{
	struct bpf_tunnel_key key = {};

	key.tunnel_id = TUNNEL_VNI;
	key.remote_ipv4 = bpf_ntohl(remote);
	key.local_ipv4 = bpf_ntohl(node_ip());
	key.tunnel_ttl = 64;
	return bpf_skb_set_tunnel_key(ctx, &key, sizeof(key), BPF_F_ZERO_CSUM_TX);
}

/* set_tunnel_macs addresses the inner frame to the receiving VXLAN device
 * (the same MAC on every node) from a MAC that is not its own, which the
 * receiving driver would drop as a loop. */
static __always_inline int set_tunnel_macs(struct __sk_buff *ctx)
{
	__u8 mac[ETH_ALEN] = VXLAN_MAC;
	__u8 src_mac[ETH_ALEN] = VXLAN_SRC_MAC;

	return set_macs(ctx, mac, src_mac);
}

/* tunnel_redirect sends p to the node owning its destination's pod CIDR
 * through the VXLAN device. Returns -1 when the destination has no
 * tunnel entry, else a TC verdict. */
static __always_inline int tunnel_redirect(struct __sk_buff *ctx, struct pkt *p)
{
	struct tunnel_value *tv = tunnel_node(p->daddr);

	if (!tv)
		return -1;
	if (set_tunnel(ctx, tv->node_ip) < 0)
		return drop(ctx, METRIC_DROP_TUNNEL);
	if (set_tunnel_macs(ctx) < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	count(ctx, METRIC_REDIRECT);
	return bpf_redirect(cfg_vxlan_ifindex, 0);
}

static __always_inline int fib_redirect(struct __sk_buff *ctx, struct pkt *p)
{
	struct bpf_fib_lookup fib = {};
	struct bpf_redir_neigh nh = {};
	long rc;

	fib.family = AF_INET;
	fib.tos = p->tos;
	fib.l4_protocol = p->proto;
	fib.sport = p->sport;
	fib.dport = p->dport;
	fib.tot_len = p->tot_len;
	fib.ifindex = ctx->ingress_ifindex;
	fib.ipv4_src = p->saddr;
	fib.ipv4_dst = p->daddr;

	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		if (dec_ttl(ctx) < 0)
			return TC_ACT_OK; /* let the stack send time exceeded */
		if (set_macs(ctx, fib.dmac, fib.smac) < 0)
			return drop(ctx, METRIC_DROP_INVALID);
		count(ctx, METRIC_REDIRECT);
		return bpf_redirect(fib.ifindex, 0);
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		if (dec_ttl(ctx) < 0)
			return TC_ACT_OK;
		nh.nh_family = AF_INET;
		nh.ipv4_nh = fib.ipv4_dst;
		count(ctx, METRIC_REDIRECT);
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	default:
		/* local, unreachable, fragmentation needed...: the stack
		 * knows what to answer */
		count(ctx, METRIC_FORWARD);
		return TC_ACT_OK;
	}
}

/* route_direct forwards p by the programs, whatever the host routing
 * mode: through the tunnel to another node's pod, into a local pod, or
 * where the FIB says. Used for packets the host stack must not see:
 * translated ones whose source may be the node's own address (NodePort
 * replies, NodePort SNAT), which the stack would drop as a martian. */
static __always_inline int route_direct(struct __sk_buff *ctx, struct pkt *p)
{
	struct endpoint_key ek = { .addr = p->daddr };
	struct endpoint_info *ep;
	int r;

	if (cfg_has(CFG_TUNNEL) && in_cluster_cidr(p->daddr) && !in_pod_cidr(p->daddr)) {
		r = tunnel_redirect(ctx, p);
		if (r >= 0)
			return r;
	}
	ep = bpf_map_lookup_elem(&glia_endpoints, &ek);
	if (ep)
		return redirect_endpoint(ctx, ep);
	return fib_redirect(ctx, p);
}

/* route forwards p after any translation: by the programs with BPF host
 * routing, else by the host stack (its routes, including those to other
 * nodes' pod CIDRs through the VXLAN device, and netfilter). */
static __always_inline int route(struct __sk_buff *ctx, struct pkt *p)
{
	if (!cfg_has(CFG_HOST_ROUTING)) {
		count(ctx, METRIC_FORWARD);
		return TC_ACT_OK;
	}
	return route_direct(ctx, p);
}

#endif
