// Package cluster reaches every glia agent of a cluster through the
// Kubernetes API, as an operator does with kubectl: it finds the pods of the
// agents' DaemonSet, one per node, and runs a command inside each agent
// container through pods/exec (client-go's remotecommand executor, as
// `kubectl exec` does), in parallel, each bounded by a timeout. Every node
// gets an Answer: the command's output, or why it did not answer (no agent
// pod on the node, the pod not running, the exec failing, the timeout).
//
// `glia status --all-nodes` and `glia version --cluster` are built on it;
// it is meant for every command that needs all agents (a migration, an
// observer), so its API is small: Open (or New with a client and an
// Executor of your own), then Run or RunJSON.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/homedir"
)

// Defaults of Options: what the Helm chart deploys.
const (
	DefaultNamespace = "glia-system"
	DefaultDaemonSet = "glia"
	DefaultContainer = "glia-agent"
	DefaultTimeout   = 10 * time.Second
	// DefaultParallel bounds the execs running at once.
	DefaultParallel = 16
)

// ErrNoKubeconfig: no kubeconfig was given and none was found.
var ErrNoKubeconfig = errors.New("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or bring up the lab (glia lab up)")

// Options say how to reach the cluster and its agents; zero fields take
// the defaults.
type Options struct {
	// Kubeconfig is an explicit kubeconfig file. Empty: $KUBECONFIG, else
	// LabKubeconfig when that file exists, else ~/.kube/config.
	Kubeconfig    string
	LabKubeconfig string
	Namespace     string // of the DaemonSet; DefaultNamespace
	DaemonSet     string // DefaultDaemonSet
	Container     string // the agent's container in its pods; DefaultContainer
	// Timeout bounds each agent's command; DefaultTimeout.
	Timeout  time.Duration
	Parallel int // DefaultParallel
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.DaemonSet == "" {
		o.DaemonSet = DefaultDaemonSet
	}
	if o.Container == "" {
		o.Container = DefaultContainer
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	return o
}

// FindKubeconfig is the kubeconfig Options lead to: the explicit one, else
// $KUBECONFIG (which may list several files; one at least must exist), else the lab's when it
// exists, else ~/.kube/config when it exists; ErrNoKubeconfig when none.
// It returns the loading rules and a description for messages.
func FindKubeconfig(o Options) (*clientcmd.ClientConfigLoadingRules, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	switch {
	case o.Kubeconfig != "":
		rules.ExplicitPath = o.Kubeconfig
		return rules, o.Kubeconfig, nil
	case os.Getenv(clientcmd.RecommendedConfigPathEnvVar) != "":
		env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar)
		if !slices.ContainsFunc(filepath.SplitList(env), exists) {
			return nil, "", fmt.Errorf("%w (KUBECONFIG=%s names no file that exists)", ErrNoKubeconfig, env)
		}
		return rules, env, nil
	case o.LabKubeconfig != "" && exists(o.LabKubeconfig):
		rules.ExplicitPath = o.LabKubeconfig
		return rules, o.LabKubeconfig + " (the lab's)", nil
	}
	if home := filepath.Join(homedir.HomeDir(), clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName); exists(home) {
		rules.ExplicitPath = home
		return rules, home, nil
	}
	return nil, "", ErrNoKubeconfig
}

func exists(p string) bool {
	_, err := os.Stat(filepath.Clean(p))
	return err == nil
}

// Cluster is a cluster's agents, reached through its API server.
type Cluster struct {
	client kubernetes.Interface
	exec   Executor
	o      Options
	// Source names the kubeconfig used, for messages.
	Source string
}

// New is a Cluster on a client and an Executor (a fake one in tests).
func New(client kubernetes.Interface, exec Executor, o Options) *Cluster {
	return &Cluster{client: client, exec: exec, o: o.withDefaults()}
}

// Open connects to the cluster the Options name.
func Open(o Options) (*Cluster, error) {
	rules, src, err := FindKubeconfig(o)
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", src, err)
	}
	cfg.UserAgent = "glia-cli"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", src, err)
	}
	c := New(cs, &KubeExecutor{Client: cs, Config: cfg}, o)
	c.Source = src
	return c, nil
}

// Agent is one node and its agent pod ("" when it has none).
type Agent struct {
	Node string
	Pod  string
	// Problem says why the agent cannot be asked, "" when it can.
	Problem string
}

// Agents lists every node of the cluster with its agent pod, sorted by
// node name. A node whose agent pod is missing or not running has a
// Problem.
func (c *Cluster) Agents(ctx context.Context) ([]Agent, error) {
	ns, name := c.o.Namespace, c.o.DaemonSet
	ds, err := c.client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no DaemonSet %s/%s: is glia installed there? (helm install glia deploy/chart/glia -n %s; -n NAMESPACE names another)", ns, name, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("DaemonSet %s/%s: %w", ns, name, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("DaemonSet %s/%s: selector: %w", ns, name, err)
	}
	pods, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("pods of DaemonSet %s/%s: %w", ns, name, err)
	}
	nodes, err := c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	byNode := map[string][]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !ownedBy(p, ds.UID, name) || p.Spec.NodeName == "" {
			continue
		}
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
	}
	agents := make([]Agent, 0, len(nodes.Items))
	for _, n := range nodes.Items {
		agents = append(agents, c.agentOf(n.Name, byNode[n.Name]))
	}
	sort.Slice(agents, func(i, j int) bool { return agents[i].Node < agents[j].Node })
	return agents, nil
}

func ownedBy(p *corev1.Pod, uid types.UID, name string) bool {
	for _, r := range p.OwnerReferences {
		if r.Kind == "DaemonSet" && r.Name == name && r.UID == uid {
			return true
		}
	}
	return false
}

// agentOf picks the node's running agent pod (during a rollout the new
// one, when both run).
func (c *Cluster) agentOf(node string, pods []*corev1.Pod) Agent {
	a := Agent{Node: node}
	if len(pods) == 0 {
		a.Problem = fmt.Sprintf("no pod of DaemonSet %s/%s on the node", c.o.Namespace, c.o.DaemonSet)
		return a
	}
	sort.Slice(pods, func(i, j int) bool { return pods[j].CreationTimestamp.Before(&pods[i].CreationTimestamp) })
	for _, p := range pods {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && containerRunning(p, c.o.Container) {
			a.Pod = p.Name
			return a
		}
	}
	p := pods[0]
	a.Pod = p.Name
	a.Problem = fmt.Sprintf("pod %s is %s", p.Name, podState(p, c.o.Container))
	return a
}

func containerRunning(p *corev1.Pod, name string) bool {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == name {
			return s.State.Running != nil
		}
	}
	return false
}

// podState says what a pod that cannot be asked is doing.
func podState(p *corev1.Pod, container string) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	state := string(p.Status.Phase)
	if state == "" {
		state = "Pending"
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name != container {
			continue
		}
		switch {
		case s.State.Waiting != nil:
			state += fmt.Sprintf(" (container %s waiting: %s)", container, s.State.Waiting.Reason)
		case s.State.Terminated != nil:
			state += fmt.Sprintf(" (container %s terminated: %s, exit code %d)", container, s.State.Terminated.Reason, s.State.Terminated.ExitCode)
		}
	}
	return state
}

// Answer is one node's agent's answer to a command.
type Answer struct {
	Node   string
	Pod    string // "" when the node has no agent pod
	Stdout []byte
	// Err says why the agent did not answer: nil when the command ran and
	// exited 0.
	Err error
}

// Run runs cmd in the agent container of every node, in parallel, each
// bounded by the timeout, and returns one Answer per node, sorted by node.
// The error is for the cluster as a whole (the API server unreachable, the
// DaemonSet missing); a node that did not answer has its Answer.Err.
func (c *Cluster) Run(ctx context.Context, cmd []string) ([]Answer, error) {
	agents, err := c.Agents(ctx)
	if err != nil {
		return nil, err
	}
	answers := make([]Answer, len(agents))
	sem := make(chan struct{}, c.o.Parallel)
	var wg sync.WaitGroup
	for i, a := range agents {
		answers[i] = Answer{Node: a.Node, Pod: a.Pod}
		if a.Problem != "" {
			answers[i].Err = errors.New(a.Problem)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			answers[i].Stdout, answers[i].Err = c.runOne(ctx, a, cmd)
		}()
	}
	wg.Wait()
	return answers, nil
}

func (c *Cluster) runOne(ctx context.Context, a Agent, cmd []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	stdout, stderr, err := c.exec.Exec(ctx, c.o.Namespace, a.Pod, c.o.Container, cmd)
	if err == nil {
		return stdout, nil
	}
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return stdout, fmt.Errorf("no answer from pod %s within %s", a.Pod, c.o.Timeout)
	}
	msg := strings.TrimSpace(string(stderr))
	if msg == "" {
		return stdout, fmt.Errorf("pod %s: %s: %w", a.Pod, strings.Join(cmd, " "), err)
	}
	return stdout, fmt.Errorf("pod %s: %s: %w: %s", a.Pod, strings.Join(cmd, " "), err, msg)
}

// Result is one node's answer decoded.
type Result[T any] struct {
	Node  string
	Pod   string
	Value T
	Err   error
}

// RunJSON runs cmd (one that prints JSON) in every agent and decodes each
// answer into a T; an answer that does not decode is that node's error.
func RunJSON[T any](ctx context.Context, c *Cluster, cmd []string) ([]Result[T], error) {
	answers, err := c.Run(ctx, cmd)
	if err != nil {
		return nil, err
	}
	out := make([]Result[T], len(answers))
	for i, a := range answers {
		out[i] = Result[T]{Node: a.Node, Pod: a.Pod, Err: a.Err}
		if a.Err != nil {
			continue
		}
		if err := json.NewDecoder(bytes.NewReader(a.Stdout)).Decode(&out[i].Value); err != nil {
			out[i].Err = fmt.Errorf("pod %s: %s: the answer is not JSON: %w", a.Pod, strings.Join(cmd, " "), err)
		}
	}
	return out, nil
}
