//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* from_container: ingress of each pod's host-side veth, i.e. every packet a
 * pod sends. Reverse-translates replies of Service flows, load-balances new
 * ones, then routes. */
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
		if (r == 0) {
			svc = lb_lookup(&p, p.daddr, SVC_SCOPE_CLUSTER_IP);
			if (svc) {
				r = lb_forward(ctx, &p, svc, 0);
				if (r != LB_CONTINUE)
					return r;
			}
		}
	}
	return route(ctx, &p);
}

char __license[] SEC("license") = "Dual BSD/GPL";
