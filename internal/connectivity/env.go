package connectivity

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"glia.dev/glia/internal/api"
)

// NodeInfo is a node and what its agent said about its datapath.
type NodeInfo struct {
	Node
	// Status is nil when the agent could not be asked (StatusErr says why).
	Status    *api.Status
	StatusErr error
}

// NodePortReason says why the node cannot serve NodePorts, or "" when it
// can: glia's eBPF load balancer with kube-proxy-replacement, or kube-proxy
// otherwise (KubeProxy says whether the cluster runs it there).
func (n NodeInfo) nodePortUnsupported(kubeProxy func(node string) bool) string {
	if n.Status == nil || n.Status.KubeProxyReplacement.Enabled {
		return ""
	}
	if kubeProxy != nil && !kubeProxy(n.Name) {
		return fmt.Sprintf("%s runs neither glia's kube-proxy replacement (kube-proxy-replacement=false) nor kube-proxy", n.Name)
	}
	return ""
}

// Mode is a one-line description of the node's datapath.
func (n NodeInfo) Mode() string {
	if n.Status == nil {
		return fmt.Sprintf("status unavailable: %v", n.StatusErr)
	}
	s := n.Status
	return fmt.Sprintf("KubeProxyReplacement=%t HostRouting=%s Masquerading=%s Datapath=%s",
		s.KubeProxyReplacement.Enabled, s.HostRouting.Mode, s.Masquerading.Mode, s.Datapath)
}

// Env is what the scenarios run against.
type Env struct {
	P      Params
	Exec   Executor
	Agents Agents
	Client kubernetes.Interface
	Nodes  []NodeInfo
	W      *Workloads
	// DNSMissing says why the cluster has no DNS ("" when it has).
	DNSMissing string
	// KubeProxy says whether kube-proxy serves Services on a node whose
	// agent does not replace it; nil means it is assumed to.
	KubeProxy func(node string) bool
	// WorldSourceIsNode is true when the external target answers with the
	// source address it saw and masquerading must show the node's address
	// (the lab's outside server).
	WorldSourceIsNode bool
	// Started is when the run began; health reports older than it that
	// fail are not trusted (see healthReport).
	Started time.Time
	// ConnTotals sums the conn-disrupt verdicts once that test ran.
	ConnTotals *ConnVerdict

	// drops holds glia_drops_total per node and reason, read before the
	// tests ran; dropsErr why it could not be read.
	drops    map[string]map[string]float64
	dropsErr map[string]error
}

// DetectNodes asks every node's agent for its status.
func (e *Env) DetectNodes(ctx context.Context, nodes []Node, out io.Writer) {
	e.Nodes = nil
	for _, n := range nodes {
		s, err := nodeStatus(ctx, e.Agents, n.Name)
		ni := NodeInfo{Node: n, Status: s, StatusErr: err}
		e.Nodes = append(e.Nodes, ni)
		if out != nil {
			fmt.Fprintf(out, "ℹ️  [%s] node %s (%s, pod CIDR %s): %s\n", e.P.Namespace, n.Name, n.IP, n.PodCIDR, ni.Mode())
		}
	}
}

func (e *Env) node(name string) NodeInfo {
	for _, n := range e.Nodes {
		if n.Name == name {
			return n
		}
	}
	return NodeInfo{Node: Node{Name: name}}
}

// run runs cmd in pod (or on node when pod is nil) for an action, recording
// the command, where it ran and what came back.
func (e *Env) run(ctx context.Context, r *ActionResult, pod *Pod, node string, cmd []string) (string, error) {
	r.Command = shellJoin(cmd)
	var stdout, stderr string
	var err error
	if pod != nil {
		r.Where = "pod " + pod.Ref()
		stdout, stderr, err = e.Exec.ExecPod(ctx, pod.Namespace, pod.Name, cmd)
	} else {
		r.Where = "node " + node
		stdout, stderr, err = e.Exec.ExecNode(ctx, node, cmd)
	}
	r.Output = strings.TrimSpace(strings.TrimSpace(stdout) + "\n" + strings.TrimSpace(stderr))
	return strings.TrimSpace(stdout), err
}

// curlCmd fetches url, failing on HTTP errors, bounded in time.
func curlCmd(url string) []string {
	return []string{"curl", "-sS", "--fail", "--connect-timeout", "5", "--max-time", "10", url}
}

func httpURL(ip string, port int, path string) string {
	host := ip
	if strings.Contains(ip, ":") {
		host = "[" + ip + "]"
	}
	return fmt.Sprintf("http://%s:%d%s", host, port, path)
}

// curlEcho fetches url from pod (or node) and checks the echo server's
// answer "hello from <want>" (want "" accepts any echo server).
func (e *Env) curlEcho(ctx context.Context, r *ActionResult, pod *Pod, node, url, want string) (string, error) {
	out, err := e.run(ctx, r, pod, node, curlCmd(url))
	if err != nil {
		return "", err
	}
	got, ok := strings.CutPrefix(out, "hello from ")
	if !ok {
		return "", fmt.Errorf("answer is not from an echo server: %q", snippet(out))
	}
	got = strings.TrimSpace(got)
	if want != "" && got != want {
		return got, fmt.Errorf("answered by %q, want %q", got, want)
	}
	return got, nil
}
