// Package bpf is glia's eBPF datapath, built on the shared Linux layer
// (package linux) and beside, never on, the legacy datapath. Its units:
//
//   - load.go: the programs of bpf/ (built with bpf2go) with the node's
//     settings compiled in, and the maps they share, pinned per node and
//     sized from the config (a pinned map of another size is replaced);
//   - attach.go: attachments (TCX, or tc clsact where TCX is missing),
//     pinned so they outlive the agent, replaced in place;
//   - programs.go: the programs on node devices, reconciled;
//   - endpoints.go: local pods — route, glia_endpoints entry, program;
//   - nodes.go: node routing — node addresses, the tunnel map, routes;
//   - lb.go, services.go, maglev.go: load balancing — the writer that
//     changes only the service map entries that differ, restores from
//     the pinned maps and reads them back to repair drift;
//   - socklb.go: socket load balancing on a cgroup;
//   - cleanup.go, portrange.go: leaving the node to the legacy datapath.
//
// Each reconciled unit gives the reconciler operations of one kind of
// kernel object (datapath.Datapath).
package bpf
