/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every map glia's programs share. The Go loader creates and pins them once
 * and hands the same maps to every program. Struct layouts are mirrored in
 * internal/maps (checked by a test against this object's BTF). */
#ifndef __GLIA_MAPS_H
#define __GLIA_MAPS_H

#include "common.h"

/* ---- endpoints: local pods ---- */
struct endpoint_key {
	__be32 addr;
};

struct endpoint_info {
	__u32 ifindex;      /* host-side veth */
	__u8 pod_mac[6];    /* MAC of the pod's interface */
	__u8 host_mac[6];   /* MAC of the host-side veth */
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_endpoints SEC(".maps");

/* ---- services ---- */
struct svc_key {
	__be32 addr;  /* frontend (ClusterIP) address; 0 for a NodePort */
	__be16 port;  /* frontend port */
	__u8 proto;
	__u8 scope;   /* SVC_SCOPE_* */
};

#define SVC_SCOPE_CLUSTER_IP 0
#define SVC_SCOPE_NODE_PORT 1

struct svc_value {
	__u32 id;        /* service id: keys its slots and maglev table */
	__u16 count;     /* number of backends; 0 rejects new connections */
	__u16 flags;     /* SVC_F_* */
	__u32 slot_base; /* generation offset of slots and maglev entries */
	__u32 rev_nat_id;
};

#define SVC_F_MAGLEV (1 << 0)
#define SVC_F_AFFINITY (1 << 1)

#define MAGLEV_M 1021

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_services SEC(".maps");

struct backend {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_backends SEC(".maps");

struct slot_key {
	__u32 svc_id;
	__u32 slot; /* slot_base + index */
};

/* backend slots: (service, 1..count) -> backend id */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct slot_key);
	__type(value, __u32);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_svc_slots SEC(".maps");

/* maglev tables: (service, 0..MAGLEV_M-1) -> backend id */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct slot_key);
	__type(value, __u32);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_maglev SEC(".maps");

/* ClientIP session affinity: (service, client address) -> the backend
 * its last new connection got. Entries expire after AFFINITY_TIMEOUT_NS
 * without a new connection (Kubernetes' default timeoutSeconds, 10800);
 * the loader deletes those whose backend left the service. */
struct affinity_key {
	__u32 svc_id;
	__be32 client;
};

struct affinity_value {
	__u64 last_seen;
	__u32 backend_id;
	__u32 pad;
};

#define AFFINITY_TIMEOUT_NS (10800ULL * 1000000000ULL)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct affinity_key);
	__type(value, struct affinity_value);
	__uint(max_entries, 65536);
} glia_affinity SEC(".maps");

/* ---- connection tracking and NAT ---- */
struct tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport; /* ICMP echo: identifier for requests */
	__be16 dport; /* ICMP echo: identifier for replies */
	__u8 proto;
	__u8 dir;     /* CT_* or NAT_* */
	__u16 pad;
};

#define CT_SERVICE 0 /* client -> frontend, as the client sent it */
#define CT_REPLY 1   /* backend -> client, after DNAT (and hairpin SNAT) */
#define CT_INBOUND 2 /* pod -> remote of a flow the remote opened: never masqueraded */

/* A flow's state lives in its forward entry (CT_SERVICE, CT_INBOUND) and is
 * mirrored into its CT_REPLY entry; bpf/lib/ct.h derives the entry's
 * lifetime from it. Entries written before lifetimes existed have no
 * CT_F_TRACKED and get the lifetime of an established flow. */
struct ct_entry {
	__u64 last_seen;  /* bpf_ktime_get_ns of the last refresh */
	__u32 backend_id;
	__u32 svc_id;
	__be32 rev_saddr; /* reply: source to restore (the frontend) */
	__be32 rev_daddr; /* reply: destination to restore (hairpin), or 0 */
	__be16 rev_sport;
	__u16 flags;      /* CT_F_* */
	__u8 tx_flags_seen; /* TCP flags sent by the side that opened the flow */
	__u8 rx_flags_seen; /* TCP flags sent by the other side */
	__u16 pad;
};

/* what the flow is */
#define CT_F_HAIRPIN (1 << 0)
#define CT_F_NODEPORT (1 << 1)
#define CT_F_SNAT (1 << 2)
/* where it is (CT and NAT entries alike) */
#define CT_F_TRACKED (1 << 8)      /* the state bits below are kept */
#define CT_F_SEEN_NON_SYN (1 << 9) /* a TCP segment without SYN passed */
#define CT_F_SEEN_REPLY (1 << 10)  /* a packet of the other side passed */
#define CT_F_TX_CLOSING (1 << 11)  /* FIN or RST from the side that opened it */
#define CT_F_RX_CLOSING (1 << 12)  /* FIN or RST from the other side */
#define CT_F_STATE 0xff00

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct tuple);
	__type(value, struct ct_entry);
	__uint(max_entries, 131072);
} glia_ct SEC(".maps");

#define NAT_EGRESS 0  /* original tuple leaving the node */
#define NAT_INGRESS 1 /* reply tuple arriving at the node */

/* The state of a translated flow lives in its NAT_EGRESS entry and is
 * mirrored into its NAT_INGRESS entry, as for CT. */
struct nat_entry {
	__u64 last_seen;
	__be32 to_addr;
	__be16 to_port;
	__u16 flags; /* CT_F_* state bits */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct tuple);
	__type(value, struct nat_entry);
	__uint(max_entries, 131072);
} glia_nat SEC(".maps");

/* ---- routing ---- */
struct tunnel_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct tunnel_value {
	__be32 node_ip;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct tunnel_key);
	__type(value, struct tunnel_value);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_tunnel SEC(".maps");

/* ---- cluster nodes ---- */
/* The addresses of the cluster's nodes (this one included): a pod reaching
 * any of them on a NodePort is load-balanced by from_container, as
 * kube-proxy does for its node's addresses. Filled from SyncNodes. */
struct node_key {
	__be32 addr;
};

struct node_value {
	__u32 flags; /* NODE_F_* */
};

#define NODE_F_LOCAL (1 << 0)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct node_key);
	__type(value, struct node_value);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} glia_node_ips SEC(".maps");

/* ---- socket load balancing ---- */
/* What a socket of the node's own processes was pointed at: (socket
 * cookie, backend) -> the frontend it asked for, so getpeername and
 * recvmsg report the frontend. */
struct sock_key {
	__u64 cookie;
	__be32 addr; /* backend */
	__be16 port;
	__u16 pad;
};

struct sock_value {
	__be32 addr; /* frontend */
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sock_key);
	__type(value, struct sock_value);
	__uint(max_entries, 65536);
} glia_sock_revnat SEC(".maps");

/* ---- metrics ---- */
enum metric_reason {
	METRIC_FORWARD = 0,
	METRIC_REDIRECT = 1,
	METRIC_DROP_NO_BACKEND = 2,
	METRIC_DROP_NAT_NO_PORT = 3,
	METRIC_DROP_INVALID = 4,
	METRIC_DROP_FIB = 5,
	METRIC_REJECT_RST = 6,
	METRIC_DROP_TUNNEL = 7,
	METRIC_DROP_CSUM = 8,
	METRIC_MAX = 16,
};

struct metric_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metric_value);
	__uint(max_entries, METRIC_MAX);
} glia_metrics SEC(".maps");

static __always_inline void count(struct __sk_buff *ctx, __u32 reason)
{
	struct metric_value *v = bpf_map_lookup_elem(&glia_metrics, &reason);
	if (v) {
		v->packets++;
		v->bytes += ctx->len;
	}
}

static __always_inline int drop(struct __sk_buff *ctx, __u32 reason)
{
	count(ctx, reason);
	return TC_ACT_SHOT;
}

#endif
