package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"glia.dev/glia/deploy"
	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/lab/noderunner"
)

// Names of glia's install, as `helm install glia deploy/chart/glia -n
// glia-system` makes it.
const (
	ReleaseName    = "glia"
	AgentDaemonSet = "glia"
	AgentContainer = "glia-agent"
	// AgentNotReadyTaint is the taint nodes register with; the agent
	// removes it from its node once it is ready.
	AgentNotReadyTaint = "node.glia.dev/agent-not-ready"
	// StoppedContainersAnnotation on a pod lists containers (comma
	// separated) the lab node runner keeps stopped: `glia lab agent stop`.
	StoppedContainersAnnotation = noderunner.StoppedContainersAnnotation
)

// labValues are the chart values every lab sets: where the API server is
// (the agents must not depend on the Services they program) and the lab's
// address plan. --set comes after them and may override them.
func labValues() []string {
	return []string{
		"k8sServiceHost=" + BridgeAddr.String(),
		fmt.Sprintf("k8sServicePort=%d", APIServerPort),
		"ipam.operator.clusterPoolIPv4PodCIDRList={" + ClusterCIDR.String() + "}",
	}
}

// helmInstall writes this glia's chart to the lab's chart directory and
// runs the real Helm against the lab's API server, as an operator installs
// glia: with that chart, or with the chart directory chart when it is set
// (an earlier release's, for upgrade tests).
func (l *Lab) helmInstall(ctx context.Context, set map[string]string, chart string) error {
	dir := l.layout.ChartDir()
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := deploy.WriteChart(dir); err != nil {
		return err
	}
	if chart != "" {
		dir = chart
	}
	args := []string{"install", ReleaseName, dir, "--namespace", AgentNamespace, "--create-namespace",
		"--kubeconfig", l.layout.Kubeconfig()}
	for _, v := range labValues() {
		args = append(args, "--set", v)
	}
	values, err := ChartArgs(set)
	if err != nil {
		return err
	}
	args = append(args, values...)
	cmd := exec.CommandContext(ctx, l.layout.Bin("helm"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// ChartArgs turns `glia lab up --set` pairs into helm arguments: a glia
// config key (kube-proxy-replacement=true) sets the chart value that
// renders it, checked as the agent checks it; anything else is a chart
// value (kubeProxyReplacement=true, bpf.masquerade=true), which the chart's
// schema checks. The result is sorted, so a lab is reproducible.
func ChartArgs(set map[string]string) ([]string, error) {
	keys := map[string]string{}
	var values []string
	for k, v := range set {
		if _, ok := config.LookupKey(k); ok {
			keys[k] = v
			continue
		}
		if k == "" || strings.ContainsAny(k, " =,") {
			return nil, fmt.Errorf("--set %q: use a chart value (kubeProxyReplacement=true) or a glia config key (kube-proxy-replacement=true)", k+"="+v)
		}
		values = append(values, k+"="+v)
	}
	out, err := deploy.SetArgs(keys)
	if err != nil {
		return nil, fmt.Errorf("--set: %w", err)
	}
	sort.Strings(values)
	for _, v := range values {
		out = append(out, "--set", v)
	}
	return out, nil
}

// prepareNodeFS creates node n's own directories (NodeRoot, its bpffs and
// cgroup directories) and, on the host, the empty mount points its binds
// need that the host lacks. It returns the host directories it created, so
// that lab down removes them again.
func (l *Lab) prepareNodeFS(n string) ([]string, error) {
	var made []string
	binds := l.layout.NodeBinds(n)
	for i, b := range binds {
		if err := os.MkdirAll(b.Source, 0o755); err != nil {
			return made, fmt.Errorf("node %s: %w", n, err)
		}
		// The mount point: inside an earlier bind, it lives in that bind's
		// source; else on the host.
		target, inside := b.Path, false
		for _, prev := range binds[:i] {
			if rel, ok := under(b.Path, prev.Path); ok {
				target, inside = filepath.Join(prev.Source, rel), true
			}
		}
		if inside {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return made, err
			}
			continue
		}
		created, err := mkdirAllTracked(target)
		made = append(made, created...)
		if err != nil {
			return made, fmt.Errorf("mount point %s for the lab nodes: %w", target, err)
		}
	}
	return made, nil
}

// under reports whether path lies below dir (after resolving the host's
// symlinks, e.g. /var/run -> /run), and the relative rest.
func under(path, dir string) (string, bool) {
	rp, rd := resolveHost(path), resolveHost(dir)
	rel, err := filepath.Rel(rd, rp)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return "", false
	}
	return rel, true
}

// resolveHost resolves the symlinks of the longest existing prefix of p.
func resolveHost(p string) string {
	rest := ""
	for cur := filepath.Clean(p); ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// mkdirAllTracked is os.MkdirAll that returns the directories it created,
// deepest last.
func mkdirAllTracked(p string) ([]string, error) {
	var missing []string
	for cur := filepath.Clean(p); ; cur = filepath.Dir(cur) {
		if _, err := os.Lstat(cur); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		missing = append([]string{cur}, missing...)
		if filepath.Dir(cur) == cur {
			break
		}
	}
	var made []string
	for _, d := range missing {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return made, err
		}
		made = append(made, d)
	}
	return made, nil
}

// removeHostDirs removes the host directories the lab created, deepest
// first, each only when empty: whatever else appeared there stays.
func removeHostDirs(dirs []string) {
	sorted := slices.Clone(dirs)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	for _, d := range sorted {
		unix.Rmdir(d) // fails, as wanted, on a non-empty directory
	}
}

// spawnRunner starts node n's runner — the kubelet stand-in — in the node's
// network namespace and in a mount namespace of its own, where the node's
// directories are bound over their paths.
func (l *Lab) spawnRunner(node string, i int) (Proc, error) {
	p := pki{dir: l.layout.PKIDir()}
	cert, key, err := p.kubeletServing(node, NodeIP(i))
	if err != nil {
		return Proc{}, err
	}
	args := []string{l.layout.Bin("glia"), "lab", "_runner",
		"--node", node, "--node-ip", NodeIP(i).String(),
		"--kubeconfig", l.layout.Kubeconfig(),
		"--cni-conf-dir", "/etc/cni/net.d", "--cni-bin-dir", "/opt/cni/bin",
		"--state-dir", l.layout.RunnerStateDir(node),
		"--cgroup", l.layout.NodeCgroup(node),
		"--cluster-dns", ClusterDNS.String(), "--cluster-domain", ClusterDomain,
		"--register-with-taints", AgentNotReadyTaint + "=true:NoSchedule",
		"--tls-cert-file", cert, "--tls-private-key-file", key, "--client-ca-file", p.CACert(),
		"--kube-proxy-cluster-cidr", ClusterCIDR.String(),
	}
	for _, b := range l.layout.NodeBinds(node) {
		args = append(args, "--bind", b.Source+":"+b.Path)
	}
	return spawnIn(node+"/runner", NodeNetns(node), syscall.CLONE_NEWNS, filepath.Join(l.layout.NodeCgroup(node), "_runner"),
		filepath.Join(l.layout.LogDir(), node+"-runner.log"), args, nil)
}

// AgentClient returns an API client for a node's agent.
func (l *Lab) AgentClient(node string) *api.Client { return api.NewClient(l.layout.AgentSocket(node)) }

// AgentPod returns the glia DaemonSet's pod on node (the newest, when one
// is being replaced).
func AgentPod(ctx context.Context, cs kubernetes.Interface, node string) (*corev1.Pod, error) {
	pl, err := cs.CoreV1().Pods(AgentNamespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list %s pods on %s: %w", AgentNamespace, node, err)
	}
	var best *corev1.Pod
	for i := range pl.Items {
		p := &pl.Items[i]
		if !ownedByDaemonSet(p, AgentDaemonSet) || p.DeletionTimestamp != nil {
			continue
		}
		if best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best = p
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no pod of DaemonSet %s/%s on %s yet", AgentNamespace, AgentDaemonSet, node)
	}
	return best, nil
}

func ownedByDaemonSet(p *corev1.Pod, name string) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Name == name {
			return true
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// agentFailed says why the agent container cannot come up, when its status
// shows it exited with an error after since (a config the agent refuses)
// or cannot be started at all; "" while it is starting or running.
func agentFailed(p *corev1.Pod, since time.Time) string {
	for _, s := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		if w := s.State.Waiting; w != nil {
			switch w.Reason {
			case "CrashLoopBackOff":
				// A program's own exit code (1: a config the agent refuses),
				// not a signal (128+N: killed by `glia lab agent kill`).
				if t := s.LastTerminationState.Terminated; t != nil && t.ExitCode > 0 && t.ExitCode < 128 && t.FinishedAt.Time.After(since) {
					return fmt.Sprintf("container %s exited with code %d: %s", s.Name, t.ExitCode, w.Message)
				}
			case "ErrImagePull", "CreateContainerConfigError", "CreateContainerError", "RunContainerError":
				return fmt.Sprintf("container %s: %s: %s", s.Name, w.Reason, w.Message)
			}
		}
	}
	return ""
}

// waitAgent waits until node's agent pod (not the one whose UID is notUID)
// is Ready and its socket answers. It gives up at once, quoting the end of
// the agent's log, when the agent exits with an error (an agent refuses to
// start on a config it cannot honour).
func (l *Lab) waitAgent(ctx context.Context, cs kubernetes.Interface, node, notUID string, timeout time.Duration) error {
	// Only what happens from now on counts: an exit before (a config that
	// has been fixed since) is not this start's failure. Status times have
	// a resolution of a second.
	since := time.Now().Truncate(time.Second)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "no agent pod yet"
	for {
		p, err := AgentPod(ctx, cs, node)
		switch {
		case err != nil:
			last = err.Error()
		case string(p.UID) == notUID:
			last = "the old agent pod is still there"
		case agentFailed(p, since) != "":
			return fmt.Errorf("glia agent pod %s/%s on %s does not start: %s; the end of its log:\n%s",
				p.Namespace, p.Name, node, agentFailed(p, since), l.agentLogTail(ctx, cs, p, 12))
		case !podReady(p):
			last = fmt.Sprintf("pod %s is not Ready", p.Name)
		default:
			err := l.AgentClient(node).Healthz(ctx)
			if err != nil {
				last = fmt.Sprintf("pod %s is Ready but its socket %s does not answer: %v", p.Name, l.layout.AgentSocket(node), err)
				break
			}
			// The node's Services are carried: by the agent, or by the
			// kube-proxy the runner runs while the agent does not.
			if last = l.kubeProxySettled(ctx, node); last == "" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("glia agent on %s not ready after %s: %s (runner log: %s)", node, timeout, last,
				filepath.Join(l.layout.LogDir(), node+"-runner.log"))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// agentLogTail returns the last lines of the agent container's log, the
// previous run's when the current one has not started, through the API
// server (as kubectl logs reads it).
func (l *Lab) agentLogTail(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, n int64) string {
	for _, previous := range []bool{false, true} {
		rc, err := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{
			Container: AgentContainer, TailLines: ptr.To(n), Previous: previous}).Stream(ctx)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if s := strings.TrimSpace(string(b)); s != "" {
			return s
		}
	}
	return "(no log)"
}

// AgentAction is what `glia lab agent ACTION NODE` does to the node's agent
// pod, as an operator would with kubectl and as a kubelet does:
//
//	restart  delete the pod; the DaemonSet makes a new one (which reads the
//	         node's config anew); wait until it is Ready
//	kill     SIGKILL the agent container's process; the runner restarts it
//	stop     stop the agent container and keep it stopped (the lab's
//	         annotation lab.glia.dev/stopped-containers on the pod)
//	start    undo stop, and wait until the agent is Ready
func (l *Lab) AgentAction(ctx context.Context, action, node string) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := l.loadState()
	if err != nil {
		return err
	}
	if !l.hasNode(st, node) {
		return fmt.Errorf("no node %q in the lab: nodes are lab-node-1 … lab-node-%d", node, st.Nodes)
	}
	cs, _, err := l.clients()
	if err != nil {
		return err
	}
	p, err := AgentPod(ctx, cs, node)
	if err != nil {
		return err
	}
	switch action {
	case "restart":
		err := cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: ptr.To(p.UID)}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete agent pod %s: %w", p.Name, err)
		}
		return l.waitAgent(ctx, cs, node, string(p.UID), 3*time.Minute)
	case "kill":
		pid, err := noderunner.FindContainerPID(l.layout.RunnerStateDir(node), p.Namespace, p.Name, AgentContainer)
		if err != nil {
			return fmt.Errorf("agent container on %s: %w", node, err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill agent (pid %d) on %s: %w", pid, node, err)
		}
		return waitPIDGone(pid, 5*time.Second)
	case "stop":
		if err := setStoppedContainers(ctx, cs, p, AgentContainer); err != nil {
			return err
		}
		return l.waitAgentDown(ctx, node, 30*time.Second)
	case "start":
		if err := setStoppedContainers(ctx, cs, p, ""); err != nil {
			return err
		}
		return l.waitAgent(ctx, cs, node, "", 3*time.Minute)
	}
	return fmt.Errorf("unknown agent action %q: use stop, start, restart or kill", action)
}

// setStoppedContainers sets (or, with "", removes) the annotation that
// keeps containers of p stopped.
func setStoppedContainers(ctx context.Context, cs kubernetes.Interface, p *corev1.Pod, containers string) error {
	val := "null"
	if containers != "" {
		val = fmt.Sprintf("%q", containers)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, StoppedContainersAnnotation, val)
	if _, err := cs.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotate pod %s: %w", p.Name, err)
	}
	return nil
}

// waitAgentDown waits until node's agent socket stops answering.
func (l *Lab) waitAgentDown(ctx context.Context, node string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, cancel := context.WithTimeout(ctx, time.Second)
		err := l.AgentClient(node).Healthz(c)
		cancel()
		if err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("glia agent on %s still answers %s after %s", node, l.layout.AgentSocket(node), timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitPIDGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still alive after %s", pid, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Component is a measured process of a node: the agent's container, or
// the kube-proxy the runner runs.
type Component struct {
	PID    int
	Cgroup string
	Args   []string
}

// AgentComponent returns node's agent container process and its pod's
// cgroup.
func (l *Lab) AgentComponent(ctx context.Context, cs kubernetes.Interface, node string) (Component, error) {
	p, err := AgentPod(ctx, cs, node)
	if err != nil {
		return Component{}, err
	}
	st, err := noderunner.FindPodState(l.layout.RunnerStateDir(node), p.Namespace, p.Name)
	if err != nil {
		return Component{}, err
	}
	pid, err := noderunner.FindContainerPID(l.layout.RunnerStateDir(node), p.Namespace, p.Name, AgentContainer)
	if err != nil {
		return Component{}, err
	}
	return Component{PID: pid, Cgroup: st.CgroupDir}, nil
}

// KubeProxyComponent returns node's kube-proxy, if one runs.
func (l *Lab) KubeProxyComponent(node string) (Component, bool) {
	st, err := noderunner.ReadKubeProxyState(l.layout.RunnerStateDir(node))
	if err != nil || !st.Running() {
		return Component{}, false
	}
	return Component{PID: st.PID, Cgroup: st.Cgroup, Args: []string{"--proxy-mode=" + st.Mode}}, true
}

// NodeMountNS returns the path of node's mount namespace (its runner's),
// for nsenter --mount.
func (l *Lab) NodeMountNS(node string) (string, error) {
	st, err := l.loadState()
	if err != nil {
		return "", err
	}
	p, ok := st.Procs[node+"/runner"]
	if !ok || !p.Alive() {
		return "", fmt.Errorf("the node runner of %s is not running (glia lab status)", node)
	}
	return fmt.Sprintf("/proc/%d/ns/mnt", p.PID), nil
}

// kubeProxySettled says what is missing ("" = nothing) for node's
// Services: kube-proxy running while the agent does not replace it, its
// rules removed while it does.
func (l *Lab) kubeProxySettled(ctx context.Context, node string) string {
	var s api.Status
	if err := l.AgentClient(node).Status(ctx, &s); err != nil {
		return "glia status: " + err.Error()
	}
	kp, err := noderunner.ReadKubeProxyState(l.layout.RunnerStateDir(node))
	if err != nil {
		return "the node runner has not looked at kube-proxy yet"
	}
	switch replaced := s.KubeProxyReplacement.Enabled; {
	case replaced && (kp.Replaced == nil || !*kp.Replaced || kp.Running()):
		return "the agent replaces kube-proxy; the runner has not stopped it yet"
	case !replaced && !kp.Running():
		return "the agent does not replace kube-proxy; the runner has not started it yet"
	}
	return ""
}
