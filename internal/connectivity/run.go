package connectivity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Cluster is how a run reaches the cluster.
type Cluster struct {
	Client kubernetes.Interface
	Exec   Executor
	Agents Agents
	// WorldSourceIsNode: the external target answers with the source
	// address it saw, which must be the client's node address.
	WorldSourceIsNode bool
	// KubeProxy says whether kube-proxy serves Services on a node whose
	// agent does not replace it; nil assumes it does.
	KubeProxy func(node string) bool
}

// ConnDisruptMode says what a run does with the conn-disrupt test.
type ConnDisruptMode int

const (
	// ConnDisruptOff leaves it out.
	ConnDisruptOff ConnDisruptMode = iota
	// ConnDisruptInclude sets it up before the tests and checks it after.
	ConnDisruptInclude
	// ConnDisruptSetupOnly sets it up and ends (the check comes later).
	ConnDisruptSetupOnly
	// ConnDisruptCheck checks an earlier setup after the tests.
	ConnDisruptCheck
)

// RunOptions configure Run.
type RunOptions struct {
	Params      Params
	Filter      Filter
	Verbose     bool
	Keep        bool
	ConnDisrupt ConnDisruptMode
	// Progress receives the text progress; nil prints nothing.
	Progress      io.Writer
	ActionTimeout time.Duration
}

// tests that need no workloads of their own.
var noWorkloads = map[string]bool{TestHealth: true, TestDrops: true, TestConnDisrupt: true}

// Run runs a connectivity test: it deploys the workloads, waits for them,
// runs the selected tests and cleans up (unless Keep). The report is nil
// when the run only set up the conn-disrupt test.
func Run(ctx context.Context, c Cluster, o RunOptions) (rep *Report, err error) {
	out := o.Progress
	if out == nil {
		out = io.Discard
	}
	p := o.Params
	nodes, err := ListNodes(ctx, c.Client)
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, errors.New("the cluster has no nodes")
	}
	env := &Env{P: p, Exec: c.Exec, Agents: c.Agents, Client: c.Client, KubeProxy: c.KubeProxy, WorldSourceIsNode: c.WorldSourceIsNode}
	env.Started = time.Now()
	env.DetectNodes(ctx, nodes, out)

	if o.ConnDisrupt == ConnDisruptSetupOnly {
		_, err := ConnDisruptSetup(ctx, c.Client, c.Exec, p, nodes, out)
		if err != nil {
			return nil, fmt.Errorf("conn-disrupt setup: %w", err)
		}
		fmt.Fprintf(out, "✅ [%s] conn-disrupt set up: make the change, then run `glia connectivity test --include-conn-disrupt-test --conn-disrupt-check`\n", p.Namespace)
		return nil, nil
	}

	var setup *ConnSetup
	var setupErr error
	switch o.ConnDisrupt {
	case ConnDisruptInclude:
		if setup, setupErr = ConnDisruptSetup(ctx, c.Client, c.Exec, p, nodes, out); setupErr != nil {
			setupErr = fmt.Errorf("conn-disrupt setup: %w", setupErr)
		}
	case ConnDisruptCheck:
		setup, setupErr = LoadConnSetup(ctx, c.Client, p.Namespace)
	}

	tests := env.Tests()
	if o.ConnDisrupt != ConnDisruptOff {
		// The check runs last but for the drop test, so that the
		// connections span the whole run.
		cd := env.ConnDisruptTest(setup, setupErr)
		tests = append(tests[:len(tests)-1:len(tests)-1], cd, tests[len(tests)-1])
	}
	runner := &Runner{Tests: tests, Filter: o.Filter, Out: out, Verbose: o.Verbose, ActionTimeout: o.ActionTimeout, Label: "[" + p.Namespace + "]"}
	selected := runner.Selected()
	if len(selected) == 0 {
		return nil, errors.New("--test selects no test")
	}
	needWorkloads := false
	for _, t := range selected {
		needWorkloads = needWorkloads || !noWorkloads[t.Name]
	}

	deployed := false
	defer func() {
		if o.Keep {
			fmt.Fprintf(out, "ℹ️  [%s] workloads kept (--keep-workloads)\n", p.Namespace)
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		if cerr := cleanup(cctx, c.Client, p.Namespace, deployed, o.ConnDisrupt != ConnDisruptOff, out); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	otherNode := len(nodes) > 1
	if needWorkloads {
		if err := Deploy(ctx, c.Client, p, otherNode, out); err != nil {
			deployed = true
			return nil, err
		}
		deployed = true
		fmt.Fprintf(out, "⌛ [%s] Waiting for the workloads to be ready...\n", p.Namespace)
		w, err := WaitReady(ctx, c.Client, p, nodes, otherNode)
		if err != nil {
			return nil, err
		}
		env.W = w
		env.DNSMissing = detectDNS(ctx, c.Client)
		env.waitServices(ctx, out)
	}
	for _, t := range selected {
		if t.Name == TestDrops {
			env.BaselineDrops(ctx)
		}
	}
	results := runner.Run(ctx)
	if ctx.Err() != nil {
		return NewReport(p.Namespace, results), ctx.Err()
	}
	rep = NewReport(p.Namespace, results)
	if env.ConnTotals != nil {
		t := env.ConnTotals
		fmt.Fprintf(out, "ℹ️  [%s] conn-disrupt: %d long-lived connections opened, %d resets, %d stalls > %s; %d requests, %d failed\n",
			p.Namespace, t.Connections, t.Resets, t.Stalls, p.ConnDisrupt.StallAfter, t.Requests, t.FailedRequests)
	}
	return rep, nil
}

// detectDNS says why the cluster has no DNS, or "".
func detectDNS(ctx context.Context, cs kubernetes.Interface) string {
	_, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "the cluster has no DNS: there is no Service kube-system/kube-dns"
	case err != nil:
		return fmt.Sprintf("cannot tell whether the cluster has DNS: %v", err)
	}
	return ""
}

// waitServices waits until the client reaches echo-same-node through its
// ClusterIP (a path on one node), so that the tests do not race the
// programming of the new Services. It only warns on timeout: the tests
// report what fails.
func (e *Env) waitServices(ctx context.Context, out io.Writer) {
	s := e.W.Services[NameEchoSameNode]
	if s == nil {
		return
	}
	c := e.W.Client
	url := httpURL(s.ClusterIP, s.Port, "/")
	err := poll(ctx, 60*time.Second, 500*time.Millisecond, "service "+s.Name, func() (bool, string, error) {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		var r ActionResult
		_, err := e.curlEcho(cctx, &r, &c, "", url, "")
		if err != nil {
			return false, fmt.Sprintf("%s from %s: %v: %s", url, c.Ref(), err, r.Output), nil
		}
		return true, "", nil
	})
	if err != nil {
		fmt.Fprintf(out, "⚠️  [%s] %v\n", e.P.Namespace, err)
	}
}

// cleanup removes the test's workloads. The namespace goes with them unless
// a conn-disrupt setup this run did not use lives in it.
func cleanup(ctx context.Context, cs kubernetes.Interface, ns string, deployed, connUsed bool, out io.Writer) error {
	if !deployed && !connUsed {
		return nil
	}
	_, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, NameConnConfigMap, metav1.GetOptions{})
	pendingSetup := err == nil && !connUsed
	if !pendingSetup {
		fmt.Fprintf(out, "🧹 [%s] Deleting namespace %s...\n", ns, ns)
		return Cleanup(ctx, cs, ns, 3*time.Minute)
	}
	fmt.Fprintf(out, "🧹 [%s] Deleting the test workloads (keeping the conn-disrupt setup for --conn-disrupt-check)...\n", ns)
	var errs []error
	sel := metav1.ListOptions{LabelSelector: labelKind + " in (client,echo,host)"}
	if err := cs.AppsV1().Deployments(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		errs = append(errs, fmt.Errorf("delete deployments: %w", err))
	}
	if err := cs.AppsV1().DaemonSets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		errs = append(errs, fmt.Errorf("delete daemonsets: %w", err))
	}
	for _, name := range []string{NameEchoSameNode, NameEchoOtherNode, NameEcho} {
		if err := cs.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete service %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
