//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* sock_lb: socket load balancing for the node's own processes (host
 * network pods, node daemons), whose packets no tc program sees before
 * routing. Attached to a cgroup; acts only on sockets of the node's
 * network namespace (cfg_netns_cookie), so pods sharing the cgroup, whose
 * traffic from_container balances, are left alone. connect and sendmsg
 * point the socket at a backend of the ClusterIP (or of a NodePort on a
 * node's address) it asked for; getpeername and recvmsg give the
 * frontend back. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/pkt.h"
#include "lib/lb.h"

#define ECONNREFUSED 111

/* The network namespace cookie of the node (bpf_get_netns_cookie). */
volatile const __u64 cfg_netns_cookie;

#define SOCK_PASS 1
#define SOCK_REJECT 0

static __always_inline int sock_in_node_netns(struct bpf_sock_addr *ctx)
{
	return cfg_netns_cookie != 0 && bpf_get_netns_cookie(ctx) == cfg_netns_cookie;
}

/* sock_fwd rewrites the destination of a connect or sendmsg to a backend.
 * Returns 0 when done or not a frontend, -1 when the frontend has no
 * backend. */
static __always_inline int sock_fwd(struct bpf_sock_addr *ctx)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u8 proto = ctx->protocol;
	struct svc_key k = { .addr = addr, .port = port, .proto = proto, .scope = SVC_SCOPE_CLUSTER_IP };
	struct sock_key sk = {};
	struct sock_value sv = {};
	struct svc_value *svc;
	struct backend *be = 0;
	struct pkt p = {};
	__u64 now, cookie;
	__u32 bid = 0;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	svc = bpf_map_lookup_elem(&glia_services, &k);
	if (!svc && is_node_addr(addr)) {
		k.addr = 0;
		k.scope = SVC_SCOPE_NODE_PORT;
		svc = bpf_map_lookup_elem(&glia_services, &k);
	}
	if (!svc)
		return 0;

	/* The tuple lb_select hashes: the socket (its cookie stands for the
	 * source port, unknown yet) and the frontend; the node is the
	 * client of session affinity. */
	cookie = bpf_get_socket_cookie(ctx);
	now = bpf_ktime_get_ns();
	p.saddr = node_ip();
	p.daddr = addr;
	p.sport = (__be16)(cookie ^ (cookie >> 16) ^ (cookie >> 32) ^ (cookie >> 48));
	p.dport = port;
	p.proto = proto;
	bid = svc->count ? affinity_backend(svc, &p, now) : 0;
	if (!bid)
		bid = lb_select(svc, &p);
	if (bid)
		be = bpf_map_lookup_elem(&glia_backends, &bid);
	if (!be)
		return -1;
	affinity_update(svc, &p, bid, now);

	sk.cookie = cookie;
	sk.addr = be->addr;
	sk.port = be->port;
	sv.addr = addr;
	sv.port = port;
	if (bpf_map_update_elem(&glia_sock_revnat, &sk, &sv, BPF_ANY) < 0)
		return 0; /* untranslated rather than unanswerable */
	ctx->user_ip4 = be->addr;
	ctx->user_port = (__u32)be->port;
	return 0;
}

/* sock_rev gives the frontend back for an address the socket was
 * pointed at. */
static __always_inline void sock_rev(struct bpf_sock_addr *ctx)
{
	struct sock_key sk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct sock_value *sv;

	sv = bpf_map_lookup_elem(&glia_sock_revnat, &sk);
	if (!sv)
		return;
	ctx->user_ip4 = sv->addr;
	ctx->user_port = (__u32)sv->port;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	if (!sock_in_node_netns(ctx))
		return SOCK_PASS;
	if (sock_fwd(ctx) < 0) {
		/* a Service without backends refuses, as its tc reset does */
		bpf_set_retval(-ECONNREFUSED);
		return SOCK_REJECT;
	}
	return SOCK_PASS;
}

SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	if (!sock_in_node_netns(ctx))
		return SOCK_PASS;
	if (sock_fwd(ctx) < 0) {
		bpf_set_retval(-ECONNREFUSED);
		return SOCK_REJECT;
	}
	return SOCK_PASS;
}

SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	if (sock_in_node_netns(ctx))
		sock_rev(ctx);
	return SOCK_PASS;
}

SEC("cgroup/getpeername4")
int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	if (sock_in_node_netns(ctx))
		sock_rev(ctx);
	return SOCK_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
