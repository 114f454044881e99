// Package bpf is glia's eBPF datapath: it loads the programs of bpf/ (built
// with bpf2go), pins their maps per node, attaches them with TCX (or tc
// clsact where TCX is missing) and programs endpoints, services and nodes
// into the maps. It implements datapath.Datapath.
package bpf
