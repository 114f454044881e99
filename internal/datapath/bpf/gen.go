package bpf

// One object per attach point; the loader shares the maps between them.
// The generated *_bpfel.go and *_bpfel.o are committed so that `go build`
// needs no clang. Regenerate with `go generate ./internal/datapath/bpf`.

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../../bpf/include" -target bpfel FromContainer ../../../bpf/from_container.c
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../../bpf/include" -target bpfel FromNetdev ../../../bpf/from_netdev.c
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../../bpf/include" -target bpfel ToNetdev ../../../bpf/to_netdev.c
//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror -I../../../bpf/include" -target bpfel SockLB ../../../bpf/sock_lb.c
