//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* pol_to_netdev: egress of the node's device on a node running the legacy
 * datapath (which has no to_netdev): the egress policy of a pod's Service
 * flow that kube-proxy translated to a backend on another node
 * (lib/policy.h). */
#include "lib/common.h"
#include "lib/pkt.h"
#include "lib/policy.h"

SEC("tc")
int pol_to_netdev(struct __sk_buff *ctx)
{
	struct pkt p;
	int r;

	r = parse(ctx, &p);
	if (r != PARSE_OK)
		return TC_ACT_OK;
	if (policy_deferred(ctx, &p) < 0)
		return policy_drop(ctx, POL_EGRESS);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
