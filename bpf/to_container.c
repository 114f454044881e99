//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* to_container: egress of each pod's host-side veth, i.e. every packet the
 * node's stack delivers to a pod (legacy host routing, the node's own
 * traffic): the pod's ingress policy, and the egress policy of a Service
 * flow decided after kube-proxy's translation (lib/policy.h). Packets the
 * programs redirect into a pod (BPF host routing) skip this hook; those
 * programs decide the same before they redirect. Both datapaths attach it. */
#include "lib/common.h"
#include "lib/pkt.h"
#include "lib/policy.h"

SEC("tc")
int to_container(struct __sk_buff *ctx)
{
	struct pkt p;
	int r;

	r = parse(ctx, &p);
	if (r != PARSE_OK)
		return TC_ACT_OK; /* not IPv4 (ARP), or what the stack let through */
	if (policy_deferred(ctx, &p) < 0)
		return policy_drop(ctx, POL_EGRESS);
	if (policy_check(ctx, &p, POL_INGRESS, 0) < 0)
		return policy_drop(ctx, POL_INGRESS);
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
