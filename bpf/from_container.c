//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from_container: ingress of each pod's host-side veth, i.e. every packet a
 * pod sends. Reverse-translates replies of Service flows, load-balances new
 * ones, then routes. Replies it translated are forwarded by the programs
 * whatever the host routing mode (their source can be the node's own
 * address, a martian to the stack). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/pkt.h"
#include "lib/nat.h"
#include "lib/lb.h"
#include "lib/route.h"

SEC("tc")
int from_container(struct __sk_buff *ctx)
{
	struct svc_value *svc;
	struct pkt p;
	int r;

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
		svc = lb_lookup(&p, p.daddr, SVC_SCOPE_CLUSTER_IP);
		if (svc) {
			r = lb_forward(ctx, &p, svc, 0);
			if (r != LB_CONTINUE)
				return r;
			/* a hairpinned flow goes back out where it came in: the
			 * stack's reverse path check would refuse it */
			if (p.saddr == HAIRPIN_ADDR)
				return route_direct(ctx, &p);
		}
	}
	return route(ctx, &p);
}

char __license[] SEC("license") = "Dual BSD/GPL";
