//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* pol_from_ctr: ingress of each pod's host-side veth on a node running the
 * legacy datapath (which has no from_container): the pod's egress policy,
 * left to after kube-proxy's translation for Services and NodePorts
 * (lib/policy.h). */
#include "lib/common.h"
#include "lib/pkt.h"
#include "lib/policy.h"

SEC("tc")
int pol_from_ctr(struct __sk_buff *ctx)
{
	struct pkt p;
	int r;

	r = parse(ctx, &p);
	if (r != PARSE_OK)
		return TC_ACT_OK;
	if (policy_check(ctx, &p, POL_EGRESS, policy_defer(&p, 0)) < 0)
		return policy_drop(ctx, POL_EGRESS);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
