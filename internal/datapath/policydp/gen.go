package policydp

// The policy programs both datapaths attach (to_container) and those only
// the legacy datapath does; their maps are shared with the eBPF
// datapath's programs, which include the same bpf/lib/policy.h. The
// generated *_bpfel.go and *_bpfel.o are committed. Regenerate with
// `make generate`.

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../../bpf/include" -target bpfel -type ipcache_key -type ipcache_value -type policy_key -type policy_value -type ep_policy_key -type ep_policy -type pol_tuple -type pol_ct -type policy_state -type policy_count ToContainer ../../../bpf/to_container.c
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../../bpf/include" -target bpfel PolFromCtr ../../../bpf/pol_from_container.c
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../../bpf/include" -target bpfel PolToNetdev ../../../bpf/pol_to_netdev.c
