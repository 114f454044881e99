// Package lab builds glia's lab: a real Kubernetes cluster on one machine.
// The control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler) runs in the root network namespace on the lab bridge's
// address; each node is a network namespace on that bridge running a
// glia-agent, the lab node runner (the kubelet stand-in) and, where the node
// does not replace it, kube-proxy. An "outside" namespace plays the internet.
//
// Every address the lab uses is in its own ranges and the root namespace
// blackholes them, so no packet of the lab leaves the machine.
package lab

import (
	"fmt"
	"net/netip"
	"path/filepath"
)

// Lab address plan (see DESIGN.md). Every range lies in LabCIDR, which the
// root namespace blackholes: none of them is routed outward.
var (
	LabCIDR      = netip.MustParsePrefix("198.18.0.0/15")
	UnderlayCIDR = netip.MustParsePrefix("198.18.0.0/24")
	BridgeAddr   = netip.MustParseAddr("198.18.0.1")   // control plane, root namespace
	GatewayAddr  = netip.MustParseAddr("198.18.0.254") // the outside namespace, nodes' default gateway
	ClusterCIDR  = netip.MustParsePrefix("198.19.0.0/16")
	ServiceCIDR  = netip.MustParsePrefix("198.18.128.0/17")
	OutsideCIDR  = netip.MustParsePrefix("198.18.64.0/18")
	OutsideAddr  = netip.MustParseAddr("198.18.64.10") // the outside web server
	ClusterDNS   = netip.MustParseAddr("198.18.128.10")
)

const (
	BridgeName     = "glia-lab0"
	OutsideNetns   = "glia-lab-outside"
	NodeNetnsPfx   = "glia-lab-"
	PodNetnsPfx    = "glia-pod-"
	APIServerPort  = 6443
	EtcdClientPort = 23790
	EtcdPeerPort   = 23800
	ClusterDomain  = "cluster.local"
	AgentNamespace = "glia-system"
	MaxNodes       = 50
)

// Layout names every path the lab uses. All of it lives under Base, the
// per-node cgroups under CgroupRoot and the BPF pins under BPFRoot.
type Layout struct {
	Base       string // e.g. /run/glia-lab
	CgroupRoot string // e.g. /sys/fs/cgroup/unified/glia-lab
	BPFRoot    string // e.g. /sys/fs/bpf/glia
	BinDir     string // where glia, glia-agent, glia-cni, glia-k8s, coredns live
}

// DefaultLayout is the layout `glia lab` uses.
func DefaultLayout(binDir string) (Layout, error) {
	cg, err := cgroupV2Root()
	if err != nil {
		return Layout{}, err
	}
	return Layout{
		Base:       "/run/glia-lab",
		CgroupRoot: filepath.Join(cg, "glia-lab"),
		BPFRoot:    "/sys/fs/bpf/glia",
		BinDir:     binDir,
	}, nil
}

func (l Layout) StateFile() string       { return filepath.Join(l.Base, "lab.json") }
func (l Layout) Kubeconfig() string      { return filepath.Join(l.Base, "kubeconfig") }
func (l Layout) PKIDir() string          { return filepath.Join(l.Base, "pki") }
func (l Layout) EtcdDir() string         { return filepath.Join(l.Base, "etcd") }
func (l Layout) LogDir() string          { return filepath.Join(l.Base, "logs") }
func (l Layout) NodeDir(n string) string { return filepath.Join(l.Base, "nodes", n) }
func (l Layout) AgentSocket(n string) string {
	return filepath.Join(l.NodeDir(n), "run", "glia.sock")
}
func (l Layout) AgentStateDir(n string) string  { return filepath.Join(l.NodeDir(n), "agent") }
func (l Layout) RunnerStateDir(n string) string { return filepath.Join(l.NodeDir(n), "runner") }
func (l Layout) CNIConfDir(n string) string     { return filepath.Join(l.NodeDir(n), "cni") }
func (l Layout) NodeCgroup(n string) string     { return filepath.Join(l.CgroupRoot, n) }
func (l Layout) NodeBPFDir(n string) string     { return filepath.Join(l.BPFRoot, n) }
func (l Layout) Bin(name string) string         { return filepath.Join(l.BinDir, name) }

// NodeName is the name of the i-th node (1-based).
func NodeName(i int) string { return fmt.Sprintf("lab-node-%d", i) }

// NodeIP is the underlay address of the i-th node (1-based): 198.18.0.11, .12, ...
func NodeIP(i int) netip.Addr {
	b := BridgeAddr.As4()
	b[3] = byte(10 + i)
	return netip.AddrFrom4(b)
}

// NodeNetns is the named network namespace of a node.
func NodeNetns(node string) string { return NodeNetnsPfx + node }

// hostVeth is the root-namespace side of node i's link to the bridge.
func hostVeth(i int) string { return fmt.Sprintf("glab-n%d", i) }

const outsideVeth = "glab-out"
