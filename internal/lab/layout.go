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
	// OutsideConnDisrupt is the outside world's conn-disrupt server, a
	// target of masqueraded long-lived connections across a switch
	// (glia connectivity test --conn-disrupt-external-target).
	OutsideConnDisrupt = netip.AddrPortFrom(OutsideAddr, 8000)
	ClusterDNS         = netip.MustParseAddr("198.18.128.10")
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
	BPFRoot    string // e.g. /sys/fs/bpf/glia-lab: one bpffs directory per node below it
	BinDir     string // where glia, glia-agent, glia-cni, glia-k8s, coredns, helm live
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
		BPFRoot:    "/sys/fs/bpf/glia-lab",
		BinDir:     binDir,
	}, nil
}

func (l Layout) StateFile() string       { return filepath.Join(l.Base, "lab.json") }
func (l Layout) Kubeconfig() string      { return filepath.Join(l.Base, "kubeconfig") }
func (l Layout) PKIDir() string          { return filepath.Join(l.Base, "pki") }
func (l Layout) EtcdDir() string         { return filepath.Join(l.Base, "etcd") }
func (l Layout) LogDir() string          { return filepath.Join(l.Base, "logs") }
func (l Layout) ChartDir() string        { return filepath.Join(l.Base, "chart") }
func (l Layout) NodeDir(n string) string { return filepath.Join(l.Base, "nodes", n) }

// NodeRoot holds a node's own files: each of NodeBinds' node paths is
// backed by the same path under it (NodeRoot/etc/cni/net.d is the node's
// /etc/cni/net.d).
func (l Layout) NodeRoot(n string) string { return filepath.Join(l.NodeDir(n), "root") }

// AgentSocket is the node's /var/run/glia/glia.sock as the host sees it.
func (l Layout) AgentSocket(n string) string {
	return filepath.Join(l.NodeRoot(n), "var/run/glia/glia.sock")
}

// AgentStateDir is the node's /var/lib/glia as the host sees it.
func (l Layout) AgentStateDir(n string) string { return filepath.Join(l.NodeRoot(n), "var/lib/glia") }

// CNIConfDir and CNIBinDir are the node's /etc/cni/net.d and /opt/cni/bin
// as the host sees them.
func (l Layout) CNIConfDir(n string) string     { return filepath.Join(l.NodeRoot(n), "etc/cni/net.d") }
func (l Layout) CNIBinDir(n string) string      { return filepath.Join(l.NodeRoot(n), "opt/cni/bin") }
func (l Layout) RunnerStateDir(n string) string { return filepath.Join(l.NodeDir(n), "runner") }
func (l Layout) NodeCgroup(n string) string     { return filepath.Join(l.CgroupRoot, n) }

// NodeBPFDir is the bpffs directory that is the node's /sys/fs/bpf.
func (l Layout) NodeBPFDir(n string) string { return filepath.Join(l.BPFRoot, n) }

// AgentBPFDir is where the node's agent pins its maps and links
// (/sys/fs/bpf/glia in the node).
func (l Layout) AgentBPFDir(n string) string { return filepath.Join(l.NodeBPFDir(n), "glia") }
func (l Layout) Bin(name string) string      { return filepath.Join(l.BinDir, name) }

// Bind is one directory of a node's own, bind-mounted over Path in the
// node's mount namespace.
type Bind struct {
	Source string // on the host
	Path   string // the path the node (its runner, CNI plugins, pods) sees
}

// NodePaths are the host paths every lab node has its own copy of: what a
// CNI agent's DaemonSet mounts from the host. Parents come before their
// children (/var/run/glia before /var/run/glia/… would be).
var NodePaths = []string{"/opt/cni/bin", "/etc/cni/net.d", "/var/run/glia", "/var/lib/glia", "/run/glia/cgroupv2"}

// NodeBinds returns node n's binds, in mount order: the node's directories
// under NodeRoot, its bpffs directory as /sys/fs/bpf and its cgroup as
// /run/glia/cgroupv2 (a cgroup2 directory, so the DaemonSet's init
// container finds one there and mounts nothing).
func (l Layout) NodeBinds(n string) []Bind {
	var out []Bind
	for _, p := range NodePaths {
		src := filepath.Join(l.NodeRoot(n), p)
		if p == "/run/glia/cgroupv2" {
			src = l.NodeCgroup(n)
		}
		out = append(out, Bind{Source: src, Path: p})
	}
	return append(out, Bind{Source: l.NodeBPFDir(n), Path: "/sys/fs/bpf"})
}

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
