package cluster

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// Executor runs a command in a container of a pod, without stdin or a
// terminal, and returns what it wrote. A command that exits non-zero is an
// error.
type Executor interface {
	Exec(ctx context.Context, namespace, pod, container string, cmd []string) (stdout, stderr []byte, err error)
}

// KubeExecutor runs commands through the API server's pods/exec, as
// `kubectl exec` does: WebSocket first, SPDY when the server cannot
// upgrade to it.
type KubeExecutor struct {
	Client kubernetes.Interface
	Config *rest.Config
}

// Exec implements Executor.
func (e *KubeExecutor) Exec(ctx context.Context, namespace, pod, container string, cmd []string) ([]byte, []byte, error) {
	req := e.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(e.Config, "POST", req.URL())
	if err != nil {
		return nil, nil, fmt.Errorf("exec in pod %s/%s: %w", namespace, pod, err)
	}
	ws, err := remotecommand.NewWebSocketExecutor(e.Config, "GET", req.URL().String())
	if err != nil {
		return nil, nil, fmt.Errorf("exec in pod %s/%s: %w", namespace, pod, err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("exec in pod %s/%s: %w", namespace, pod, err)
	}
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	return stdout.Bytes(), stderr.Bytes(), err
}
