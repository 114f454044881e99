//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from_netdev: ingress of the node's device and of the VXLAN device.
 * Reverses masquerade and NodePort SNAT, load-balances NodePort, reverses
 * DNAT of replies from remote backends, and delivers to local pods (with
 * BPF host routing; else the stack does). Translated packets are always
 * forwarded by the programs: after NodePort SNAT their source is the
 * node's own address, which the stack would drop as a martian. Network
 * policy: the ingress of a local pod it delivers to (replies it
 * translated are replies, allowed). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/pkt.h"
#include "lib/nat.h"
#include "lib/lb.h"
#include "lib/route.h"
#include "lib/policy.h"

SEC("tc")
int from_netdev(struct __sk_buff *ctx)
{
	struct endpoint_key ek = {};
	struct endpoint_info *ep;
	struct svc_value *svc;
	int translated = 0;
	struct pkt p;
	int r;

	r = parse(ctx, &p);
	if (r == PARSE_NOT_IPV4)
		return TC_ACT_OK;
	if (r < 0)
		return drop(ctx, METRIC_DROP_INVALID);

	if (p.daddr == node_ip()) {
		r = rev_snat(ctx, &p);
		if (r < 0)
			return drop(ctx, METRIC_DROP_INVALID);
		translated = r;
		if (!r && cfg_has(CFG_KPR)) {
			svc = lb_lookup(&p, 0, SVC_SCOPE_NODE_PORT);
			if (svc) {
				r = lb_forward(ctx, &p, svc, LB_NODEPORT);
				if (r != LB_CONTINUE)
					return r;
				if (is_local_endpoint(p.daddr) && policy_check(ctx, &p, POL_INGRESS, 0) < 0)
					return policy_drop(ctx, POL_INGRESS);
				return route_direct(ctx, &p);
			}
		}
	}
	if (cfg_has(CFG_KPR)) {
		r = rev_dnat(ctx, &p);
		if (r < 0)
			return drop(ctx, METRIC_DROP_INVALID);
		translated |= r;
	}
	if (translated)
		return route_direct(ctx, &p);
	if (cfg_has(CFG_MASQUERADE) && p.has_l4 && in_pod_cidr(p.daddr) && !in_cluster_cidr(p.saddr))
		note_inbound(&p);
	if (cfg_has(CFG_HOST_ROUTING)) {
		ek.addr = p.daddr;
		ep = bpf_map_lookup_elem(&glia_endpoints, &ek);
		if (ep) {
			if (policy_check(ctx, &p, POL_INGRESS, 0) < 0)
				return policy_drop(ctx, POL_INGRESS);
			return redirect_endpoint(ctx, ep);
		}
	}
	count(ctx, METRIC_FORWARD);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
