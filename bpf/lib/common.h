/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet headers, runtime configuration and small helpers shared by every
 * glia program. IPv4 only. */
#ifndef __GLIA_COMMON_H
#define __GLIA_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7

#define ETH_ALEN 6
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define AF_INET 2

#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct ethhdr {
	__u8 h_dest[ETH_ALEN];
	__u8 h_source[ETH_ALEN];
	__be16 h_proto;
} __attribute__((packed));

struct iphdr {
	__u8 ihl_version; /* ihl in the low nibble on little endian */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res; /* data offset in the high nibble */
	__u8 flags;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

struct udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define IP_CSUM_OFF (ETH_HLEN + 10)
#define IP_SADDR_OFF (ETH_HLEN + 12)
#define IP_DADDR_OFF (ETH_HLEN + 16)

/* Runtime configuration: set by the loader before the programs are loaded.
 * Addresses and masks are in network byte order. */
volatile const __be32 cfg_node_ip;
volatile const __be32 cfg_pod_cidr;
volatile const __be32 cfg_pod_mask;
volatile const __be32 cfg_cluster_cidr;
volatile const __be32 cfg_cluster_mask;
volatile const __u8 cfg_node_mac[ETH_ALEN];
volatile const __u32 cfg_node_ifindex;
volatile const __u32 cfg_vxlan_ifindex;
volatile const __u32 cfg_flags;

#define CFG_HOST_ROUTING (1 << 0)
#define CFG_MASQUERADE (1 << 1)
#define CFG_KPR (1 << 2)
#define CFG_TUNNEL (1 << 3)

/* Source address given to a hairpinned flow (a pod reaching itself through a
 * Service): 169.254.42.1. */
#define HAIRPIN_ADDR bpf_htonl(0xa9fe2a01)

/* MAC address of every node's VXLAN device, so decapsulated frames are
 * addressed to the receiving device without neighbour resolution. */
#define VXLAN_MAC {0x02, 0x67, 0x6c, 0x69, 0x61, 0x01}
/* Inner source MAC of tunnelled frames: not the device's own, which the
 * receiving VXLAN driver would drop as a loop. */
#define VXLAN_SRC_MAC {0x02, 0x67, 0x6c, 0x69, 0x61, 0x02}
#define TUNNEL_VNI 2

static __always_inline int cfg_has(__u32 flag)
{
	return (cfg_flags & flag) != 0;
}

static __always_inline __be32 node_ip(void)
{
	return cfg_node_ip;
}

static __always_inline int in_pod_cidr(__be32 addr)
{
	return (addr & cfg_pod_mask) == cfg_pod_cidr;
}

static __always_inline int in_cluster_cidr(__be32 addr)
{
	return (addr & cfg_cluster_mask) == cfg_cluster_cidr;
}

static __always_inline __u16 csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/* hash32 mixes a few words into one (a murmur3-style finaliser). */
static __always_inline __u32 mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 hash_tuple(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport, __u8 proto)
{
	__u32 h = mix32(saddr ^ 0x9e3779b9);
	h = mix32(h ^ daddr);
	h = mix32(h ^ (((__u32)sport << 16) | dport));
	return mix32(h ^ proto);
}

#endif
