// Package connectivity is `glia connectivity test`: it deploys its own
// workloads into a namespace of the cluster (client pods, echo pods placed on
// the same and on another node, a host-network DaemonSet, ClusterIP and
// NodePort Services), probes every path between them — pod to pod, to
// Services, to NodePorts, hairpin, pod to host and back, to the world, DNS,
// ICMP — asks every glia-agent whether its nodes are healthy and whether its
// datapath dropped packets it should not have, and reports each test with
// its actions and the summary line users of `cilium connectivity test` know.
//
// The engine (Test, T, Runner, Report) knows nothing about Kubernetes; the
// scenarios run against an Env, which reaches pods and nodes through an
// Executor (the lab's `glia lab exec`, or Kubernetes exec on a real cluster)
// and the agents through an Agents implementation.
//
// The conn-disrupt test (ConnDisrupt*) keeps long-lived TCP connections and a
// steady stream of new requests running between pods on different nodes and
// through a Service across a change (an agent restart, an upgrade, a node's
// switch of datapath), and reports every connection that was reset or
// stalled and every request that failed.
package connectivity
