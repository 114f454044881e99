//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* to_netdev: egress of the node's device (BPF masquerade) and of the VXLAN
 * device (tunnel key for packets the stack routed there). Network policy:
 * the egress of a pod's Service flow kube-proxy translated to a backend
 * on another node (lib/policy.h). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/pkt.h"
#include "lib/nat.h"
#include "lib/route.h"
#include "lib/policy.h"

static __always_inline int needs_masquerade(__be32 saddr, __be32 daddr)
{
	return (in_pod_cidr(saddr) || saddr == HAIRPIN_ADDR) && !in_cluster_cidr(daddr);
}

/* to_tunnel handles the egress of the VXLAN device: packets the programs
 * redirected there carry their tunnel key already; packets the stack
 * routed there (legacy host routing, the node's own traffic to remote
 * pods) get it here, from the tunnel map. */
static __always_inline int to_tunnel(struct __sk_buff *ctx, struct pkt *p, int parsed)
{
	struct bpf_tunnel_key key = {};
	struct tunnel_value *tv;

	if (bpf_skb_get_tunnel_key(ctx, &key, sizeof(key), 0) == 0 && key.remote_ipv4)
		return TC_ACT_OK;
	/* Only IPv4 pod traffic crosses the tunnel; anything else (IPv6
	 * neighbour discovery, a stray ARP) has no node to go to. */
	if (parsed != PARSE_OK)
		return drop(ctx, METRIC_DROP_TUNNEL);
	tv = tunnel_node(p->daddr);
	if (!tv)
		return drop(ctx, METRIC_DROP_TUNNEL);
	if (set_tunnel(ctx, tv->node_ip) < 0)
		return drop(ctx, METRIC_DROP_TUNNEL);
	if (set_tunnel_macs(ctx) < 0)
		return drop(ctx, METRIC_DROP_INVALID);
	count(ctx, METRIC_FORWARD);
	return TC_ACT_OK;
}

SEC("tc")
int to_netdev(struct __sk_buff *ctx)
{
	struct pkt p;
	int r;

	r = parse(ctx, &p);
	if (r == PARSE_OK && policy_deferred(ctx, &p) < 0)
		return policy_drop(ctx, POL_EGRESS);
	if (cfg_has(CFG_TUNNEL) && cfg_vxlan_ifindex && ctx->ifindex == cfg_vxlan_ifindex)
		return to_tunnel(ctx, &p, r);
	if (r == PARSE_NOT_IPV4)
		return TC_ACT_OK;
	if (r < 0)
		return drop(ctx, METRIC_DROP_INVALID);

	if (!cfg_has(CFG_MASQUERADE)) {
		/* iptables masquerades (or nothing does): only flows glia
		 * translated before a switch continue here */
		if (p.has_l4 && needs_masquerade(p.saddr, p.daddr) && snat_continue(ctx, &p, node_ip()) < 0)
			return drop(ctx, METRIC_DROP_INVALID);
		return TC_ACT_OK;
	}
	if (p.icmp_err && in_pod_cidr(p.saddr) && !in_cluster_cidr(p.daddr)) {
		if (snat_icmp_err(ctx, &p) < 0)
			return drop(ctx, METRIC_DROP_INVALID);
		return TC_ACT_OK;
	}
	if (p.has_l4 && needs_masquerade(p.saddr, p.daddr) && !is_inbound_reply(&p)) {
		if (snat(ctx, &p, node_ip()) < 0)
			return drop(ctx, METRIC_DROP_NAT_NO_PORT);
	}
	count(ctx, METRIC_FORWARD);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
