//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from_container: ingress of each pod's host-side veth, i.e. every packet a
 * pod sends. Reverse-translates replies of Service flows, load-balances new
 * ones (to a ClusterIP, or to a NodePort on any node's address), then
 * routes; a connection straight to a pod's address forgets the closing
 * Service flow whose tuple it reuses. Replies it translated are forwarded
 * by the programs whatever the host routing mode (their source can be the
 * node's own address, a martian to the stack). Network policy: the pod's
 * egress, on the backend a Service flow got (lib/policy.h), and with BPF
 * host routing the ingress of a local pod it redirects to. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/pkt.h"
#include "lib/nat.h"
#include "lib/lb.h"
#include "lib/route.h"
#include "lib/policy.h"

SEC("tc")
int from_container(struct __sk_buff *ctx)
{
	struct svc_value *svc;
	struct pkt p;
	int r, kind;

	r = parse(ctx, &p);
	if (r == PARSE_NOT_IPV4)
		return TC_ACT_OK;
	if (r < 0)
		return drop(ctx, METRIC_DROP_INVALID);

	if (cfg_has(CFG_KPR)) {
		r = rev_dnat(ctx, &p);
		if (r < 0)
			return drop(ctx, METRIC_DROP_INVALID);
		if (r > 0)
			return route_direct(ctx, &p);
		kind = LB_CLUSTER_IP;
		svc = lb_lookup(&p, p.daddr, SVC_SCOPE_CLUSTER_IP);
		if (!svc && !in_cluster_cidr(p.daddr) && is_node_addr(p.daddr)) {
			/* a NodePort on this node's address (which the stack
			 * would deliver to nothing) or another node's: served
			 * here, as from that node's device */
			kind = LB_NODEPORT_POD;
			svc = lb_lookup(&p, 0, SVC_SCOPE_NODE_PORT);
			if (svc && !lb_may_open(&p))
				svc = 0;
		}
		if (!svc)
			lb_direct_syn(&p);
		if (svc) {
			r = lb_forward(ctx, &p, svc, kind);
			if (r != LB_CONTINUE)
				return r;
			/* a hairpinned flow goes back out where it came in: the
			 * stack's reverse path check would refuse it */
			if (p.saddr == HAIRPIN_ADDR)
				return route_direct(ctx, &p);
		}
	}
	if (policy_check(ctx, &p, POL_EGRESS, policy_defer(&p, cfg_has(CFG_KPR))) < 0)
		return policy_drop(ctx, POL_EGRESS);
	if (cfg_has(CFG_HOST_ROUTING) && is_local_endpoint(p.daddr) && policy_check(ctx, &p, POL_INGRESS, 0) < 0)
		return policy_drop(ctx, POL_INGRESS);
	return route(ctx, &p);
}

char __license[] SEC("license") = "Dual BSD/GPL";
