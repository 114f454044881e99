/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Parsing an IPv4 packet into a tuple, and rewriting addresses and ports
 * with their checksums, including the headers embedded in ICMP errors. */
#ifndef __GLIA_PKT_H
#define __GLIA_PKT_H

#include "common.h"

struct pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport; /* ICMP echo request: identifier */
	__be16 dport; /* ICMP echo reply: identifier */
	__u32 l4_off;
	__u16 tot_len;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 has_l4;   /* ports (or the echo identifier) are valid */
	__u8 icmp_err; /* an ICMP error whose embedded tuple is parsed below */
	__u8 tos;
	/* embedded packet of an ICMP error */
	__u32 in_l3_off;
	__u32 in_l4_off;
	__be32 in_saddr;
	__be32 in_daddr;
	__be16 in_sport;
	__be16 in_dport;
	__u8 in_proto;
	__u8 in_l4_len; /* bytes of the embedded L4 header present */
};

#define PARSE_NOT_IPV4 0
#define PARSE_OK 1
#define PARSE_INVALID -1

/* parse_inner reads the packet embedded in an ICMP error. */
static __always_inline void parse_inner(struct __sk_buff *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 off = p->l4_off + sizeof(struct icmphdr);
	struct iphdr *ip;
	__u8 ihl;

	if (off > 80)
		return;
	ip = data + off;
	if ((void *)(ip + 1) > data_end)
		return;
	ihl = ip->ihl_version & 0xf;
	if ((ip->ihl_version >> 4) != 4 || ihl < 5)
		return;
	p->in_l3_off = off;
	p->in_l4_off = off + ihl * 4;
	p->in_saddr = ip->saddr;
	p->in_daddr = ip->daddr;
	p->in_proto = ip->protocol;

	off = p->in_l4_off;
	if (off > 160)
		return;
	switch (p->in_proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP: {
		__be16 *ports = data + off;
		if ((void *)(ports + 2) > data_end)
			return;
		p->in_sport = ports[0];
		p->in_dport = ports[1];
		p->in_l4_len = 4;
		if (data + off + 8 <= data_end)
			p->in_l4_len = 8;
		if (p->in_proto == IPPROTO_TCP && data + off + 18 <= data_end)
			p->in_l4_len = 18;
		break;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *ic = data + off;
		if ((void *)(ic + 1) > data_end)
			return;
		if (ic->type == ICMP_ECHO) {
			p->in_sport = ic->id;
			p->in_dport = 0;
		} else if (ic->type == ICMP_ECHOREPLY) {
			p->in_sport = 0;
			p->in_dport = ic->id;
		} else {
			return;
		}
		p->in_l4_len = 8;
		break;
	}
	default:
		return;
	}
	p->icmp_err = 1;
}

static __always_inline int parse(struct __sk_buff *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u8 ihl;

	__builtin_memset(p, 0, sizeof(*p));
	if ((void *)(eth + 1) > data_end)
		return PARSE_NOT_IPV4;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PARSE_INVALID;
	ihl = ip->ihl_version & 0xf;
	if ((ip->ihl_version >> 4) != 4 || ihl < 5)
		return PARSE_INVALID;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->tot_len = bpf_ntohs(ip->tot_len);
	p->tos = ip->tos;
	p->l4_off = ETH_HLEN + ihl * 4;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_OK; /* fragments carry no usable ports */

	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = data + p->l4_off;
		if ((void *)(tcp + 1) > data_end)
			return PARSE_INVALID;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = tcp->flags;
		p->has_l4 = 1;
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = data + p->l4_off;
		if ((void *)(udp + 1) > data_end)
			return PARSE_INVALID;
		p->sport = udp->source;
		p->dport = udp->dest;
		p->has_l4 = 1;
		break;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *ic = data + p->l4_off;
		if ((void *)(ic + 1) > data_end)
			return PARSE_INVALID;
		p->icmp_type = ic->type;
		if (ic->type == ICMP_ECHO) {
			p->sport = ic->id;
			p->has_l4 = 1;
		} else if (ic->type == ICMP_ECHOREPLY) {
			p->dport = ic->id;
			p->has_l4 = 1;
		} else if (ic->type == ICMP_DEST_UNREACH || ic->type == ICMP_TIME_EXCEEDED) {
			parse_inner(ctx, p);
		}
		break;
	}
	}
	return PARSE_OK;
}

/* csum_update32/16 update a stored 16-bit one's complement checksum for a
 * changed word (RFC 1624), all values in memory order. */
static __always_inline __u16 csum_update32(__u16 check, __u32 from, __u32 to)
{
	__u32 s = (__u16)~check;
	s += (__u16)~(from & 0xffff);
	s += (__u16)~(from >> 16);
	s += (to & 0xffff) + (to >> 16);
	return csum_fold(s);
}

static __always_inline __u16 csum_update16(__u16 check, __u16 from, __u16 to)
{
	__u32 s = (__u16)~check;
	s += (__u16)~from;
	s += to;
	return csum_fold(s);
}

static __always_inline __u32 l4_csum_off(struct pkt *p)
{
	switch (p->proto) {
	case IPPROTO_TCP:
		return p->l4_off + 16;
	case IPPROTO_UDP:
		return p->l4_off + 6;
	case IPPROTO_ICMP:
		return p->l4_off + 2;
	}
	return 0;
}

static __always_inline __u64 l4_csum_flags(struct pkt *p)
{
	return p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* set_addr rewrites the source (src != 0) or destination address. */
static __always_inline int set_addr(struct __sk_buff *ctx, struct pkt *p, int src, __be32 to)
{
	__be32 from = src ? p->saddr : p->daddr;
	__u32 off = src ? IP_SADDR_OFF : IP_DADDR_OFF;

	if (from == to)
		return 0;
	if ((p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) && p->has_l4) {
		if (bpf_l4_csum_replace(ctx, l4_csum_off(p), from, to,
					BPF_F_PSEUDO_HDR | sizeof(to) | l4_csum_flags(p)) < 0)
			return -1;
	}
	if (bpf_l3_csum_replace(ctx, IP_CSUM_OFF, from, to, sizeof(to)) < 0)
		return -1;
	if (bpf_skb_store_bytes(ctx, off, &to, sizeof(to), 0) < 0)
		return -1;
	if (src)
		p->saddr = to;
	else
		p->daddr = to;
	return 0;
}

/* set_port rewrites the source (src != 0) or destination port; for ICMP
 * echo it rewrites the identifier. */
static __always_inline int set_port(struct __sk_buff *ctx, struct pkt *p, int src, __be16 to)
{
	__be16 from = src ? p->sport : p->dport;
	__u32 off;

	if (from == to || !p->has_l4)
		return 0;
	if (p->proto == IPPROTO_ICMP)
		off = p->l4_off + 4;
	else
		off = p->l4_off + (src ? 0 : 2);
	if (bpf_l4_csum_replace(ctx, l4_csum_off(p), from, to, sizeof(to) | l4_csum_flags(p)) < 0)
		return -1;
	if (bpf_skb_store_bytes(ctx, off, &to, sizeof(to), 0) < 0)
		return -1;
	if (src)
		p->sport = to;
	else
		p->dport = to;
	return 0;
}

/* icmp_csum_replace updates the ICMP checksum of an error message for a
 * change in its payload. */
static __always_inline int icmp_csum_replace(struct __sk_buff *ctx, struct pkt *p, __u32 from, __u32 to, __u32 size)
{
	return bpf_l4_csum_replace(ctx, p->l4_off + 2, from, to, size);
}

/* set_inner rewrites the embedded packet of an ICMP error: its source
 * (src != 0) or destination address and port, with the embedded IP and L4
 * checksums and the ICMP checksum. */
static __always_inline int set_inner(struct __sk_buff *ctx, struct pkt *p, int src, __be32 to_addr, __be16 to_port)
{
	__be32 from_addr = src ? p->in_saddr : p->in_daddr;
	__be16 from_port = src ? p->in_sport : p->in_dport;
	__u32 l3 = p->in_l3_off, l4 = p->in_l4_off;
	__u16 old_csum, new_csum;
	__u32 port_off, csum_off = 0;

	if (!p->icmp_err)
		return 0;
	if (from_addr != to_addr) {
		if (bpf_skb_load_bytes(ctx, l3 + 10, &old_csum, 2) < 0)
			return -1;
		new_csum = csum_update32(old_csum, from_addr, to_addr);
		if (bpf_skb_store_bytes(ctx, l3 + (src ? 12 : 16), &to_addr, 4, 0) < 0 ||
		    bpf_skb_store_bytes(ctx, l3 + 10, &new_csum, 2, 0) < 0)
			return -1;
		if (icmp_csum_replace(ctx, p, from_addr, to_addr, 4) < 0 ||
		    icmp_csum_replace(ctx, p, old_csum, new_csum, 2) < 0)
			return -1;
	}

	/* the embedded L4 checksum, when it is part of the quote */
	switch (p->in_proto) {
	case IPPROTO_TCP:
		if (p->in_l4_len >= 18)
			csum_off = l4 + 16;
		port_off = l4 + (src ? 0 : 2);
		break;
	case IPPROTO_UDP:
		if (p->in_l4_len >= 8)
			csum_off = l4 + 6;
		port_off = l4 + (src ? 0 : 2);
		break;
	default: /* ICMP echo: the identifier, covered by the ICMP checksum only */
		csum_off = l4 + 2;
		port_off = l4 + 4;
		break;
	}
	if (csum_off) {
		if (bpf_skb_load_bytes(ctx, csum_off, &old_csum, 2) < 0)
			return -1;
		if (!(p->in_proto == IPPROTO_UDP && old_csum == 0)) {
			new_csum = old_csum;
			if (p->in_proto != IPPROTO_ICMP)
				new_csum = csum_update32(new_csum, from_addr, to_addr);
			if (from_port != to_port && to_port != 0)
				new_csum = csum_update16(new_csum, from_port, to_port);
			if (p->in_proto == IPPROTO_UDP && new_csum == 0)
				new_csum = 0xffff;
			if (new_csum != old_csum) {
				if (bpf_skb_store_bytes(ctx, csum_off, &new_csum, 2, 0) < 0 ||
				    icmp_csum_replace(ctx, p, old_csum, new_csum, 2) < 0)
					return -1;
			}
		}
	}
	if (from_port != to_port && to_port != 0) {
		if (bpf_skb_store_bytes(ctx, port_off, &to_port, 2, 0) < 0 ||
		    icmp_csum_replace(ctx, p, from_port, to_port, 2) < 0)
			return -1;
	}
	if (src) {
		p->in_saddr = to_addr;
		if (to_port)
			p->in_sport = to_port;
	} else {
		p->in_daddr = to_addr;
		if (to_port)
			p->in_dport = to_port;
	}
	return 0;
}

static __always_inline int set_macs(struct __sk_buff *ctx, const __u8 *dst, const __u8 *src)
{
	__u8 macs[12];
	__builtin_memcpy(macs, dst, 6);
	__builtin_memcpy(macs + 6, src, 6);
	return bpf_skb_store_bytes(ctx, 0, macs, sizeof(macs), 0);
}

#endif
