package connectivity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// Executor runs commands inside pods and on nodes (in the node's network
// namespace). A command that ran and exited non-zero returns an error that
// wraps *ExitError.
type Executor interface {
	ExecPod(ctx context.Context, namespace, pod string, cmd []string) (stdout, stderr string, err error)
	ExecNode(ctx context.Context, node string, cmd []string) (stdout, stderr string, err error)
}

// ExitError is a command that ran and exited with a non-zero code.
type ExitError struct{ Code int }

func (e *ExitError) Error() string {
	return fmt.Sprintf("command terminated with exit code %d", e.Code)
}

// LabExecutor runs commands through `glia lab exec` of the glia binary at
// Glia: the lab has no kubelet to exec through.
type LabExecutor struct {
	Glia string
}

// ExecPod runs `glia lab exec -n NAMESPACE POD -- CMD`.
func (e LabExecutor) ExecPod(ctx context.Context, namespace, pod string, cmd []string) (string, string, error) {
	return e.run(ctx, append([]string{"lab", "exec", "-n", namespace, pod, "--"}, cmd...))
}

// ExecNode runs `glia lab exec --node NODE -- CMD`.
func (e LabExecutor) ExecNode(ctx context.Context, node string, cmd []string) (string, string, error) {
	return e.run(ctx, append([]string{"lab", "exec", "--node", node, "--"}, cmd...))
}

func (e LabExecutor) run(ctx context.Context, args []string) (string, string, error) {
	c := exec.CommandContext(ctx, e.Glia, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		err = &ExitError{Code: ee.ExitCode()}
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return out.String(), errb.String(), err
}

// KubeExecutor runs commands through the Kubernetes exec API (SPDY). Node
// commands run in the pod of the host-network DaemonSet on that node,
// found in HostNamespace by HostSelector.
type KubeExecutor struct {
	Client        kubernetes.Interface
	Config        *rest.Config
	HostNamespace string
	HostSelector  string

	mu    sync.Mutex
	hosts map[string]string // node -> pod name
}

// ExecPod runs cmd in the first container of the pod.
func (e *KubeExecutor) ExecPod(ctx context.Context, namespace, pod string, cmd []string) (string, string, error) {
	req := e.Client.CoreV1().RESTClient().Post().Resource("pods").Name(pod).Namespace(namespace).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(e.Config, "POST", req.URL())
	if err != nil {
		return "", "", fmt.Errorf("exec in pod %s/%s: %w", namespace, pod, err)
	}
	var out, errb bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	var ce interface{ ExitStatus() int }
	if errors.As(err, &ce) {
		err = &ExitError{Code: ce.ExitStatus()}
	}
	return out.String(), errb.String(), err
}

// ExecNode runs cmd in the host-network pod on node.
func (e *KubeExecutor) ExecNode(ctx context.Context, node string, cmd []string) (string, string, error) {
	pod, err := e.hostPod(ctx, node)
	if err != nil {
		return "", "", err
	}
	return e.ExecPod(ctx, e.HostNamespace, pod, cmd)
}

func (e *KubeExecutor) hostPod(ctx context.Context, node string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.hosts[node]; ok {
		return p, nil
	}
	pl, err := e.Client.CoreV1().Pods(e.HostNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: e.HostSelector, FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil {
		return "", fmt.Errorf("find the host-network pod on %s: %w", node, err)
	}
	for _, p := range pl.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			if e.hosts == nil {
				e.hosts = map[string]string{}
			}
			e.hosts[node] = p.Name
			return p.Name, nil
		}
	}
	return "", fmt.Errorf("no running pod %s in %s on node %s", e.HostSelector, e.HostNamespace, node)
}

// shellJoin renders a command for a person to copy.
func shellJoin(cmd []string) string {
	parts := make([]string, len(cmd))
	for i, a := range cmd {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$`\\|&;<>(){}*?#~") {
			parts[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			parts[i] = a
		}
	}
	return strings.Join(parts, " ")
}
