//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* to_netdev: egress of the node's device (BPF masquerade) and of the VXLAN
 * device (tunnel key for packets the stack routed there). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/pkt.h"
#include "lib/nat.h"

static __always_inline int needs_masquerade(__be32 saddr, __be32 daddr)
{
	return (in_pod_cidr(saddr) || saddr == HAIRPIN_ADDR) && !in_cluster_cidr(daddr);
}

SEC("tc")
int to_netdev(struct __sk_buff *ctx)
{
	struct pkt p;
	int r;

	r = parse(ctx, &p);
	if (r == PARSE_NOT_IPV4)
		return TC_ACT_OK;
	if (r < 0)
		return drop(ctx, METRIC_DROP_INVALID);

	if (cfg_has(CFG_TUNNEL) && cfg_vxlan_ifindex && ctx->ifindex == cfg_vxlan_ifindex) {
		struct tunnel_key tk = { .prefixlen = 32 };
		struct bpf_tunnel_key key = {};
		struct tunnel_value *tv;

		if (bpf_skb_get_tunnel_key(ctx, &key, sizeof(key), 0) == 0 && key.remote_ipv4)
			return TC_ACT_OK;
		__builtin_memcpy(tk.addr, &p.daddr, 4);
		tv = bpf_map_lookup_elem(&glia_tunnel, &tk);
		if (!tv)
			return drop(ctx, METRIC_DROP_TUNNEL);
		key.tunnel_id = TUNNEL_VNI;
		key.remote_ipv4 = bpf_ntohl(tv->node_ip);
		key.tunnel_ttl = 64;
		if (bpf_skb_set_tunnel_key(ctx, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
			return drop(ctx, METRIC_DROP_TUNNEL);
		return TC_ACT_OK;
	}

	if (!cfg_has(CFG_MASQUERADE))
		return TC_ACT_OK;
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
