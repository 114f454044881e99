package k8s

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// TaintAgentNotReady is the taint new nodes are registered with (the node
// runner's, or kubelet's, --register-with-taints) so that no pod is
// scheduled to them before glia can network it; the agent removes it,
// whatever its effect, once it is ready.
const TaintAgentNotReady = "node.glia.dev/agent-not-ready"

// HasTaint says whether the node carries a taint with key, any effect.
func HasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// RemoveTaint removes every taint with key (any effect) from the node with
// a JSON patch that first tests the taints are what were read, so a
// concurrent change makes the patch fail instead of being overwritten. It
// reports whether it removed any; a node without the taint is left alone
// (no write).
func RemoveTaint(ctx context.Context, c kubernetes.Interface, node, key string) (bool, error) {
	n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("read node %s: %w", node, err)
	}
	if !HasTaint(n, key) {
		return false, nil
	}
	keep := []corev1.Taint{}
	for _, t := range n.Spec.Taints {
		if t.Key != key {
			keep = append(keep, t)
		}
	}
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/spec/taints", "value": n.Spec.Taints},
		{"op": "replace", "path": "/spec/taints", "value": keep},
	})
	if err != nil {
		return false, err
	}
	if _, err := c.CoreV1().Nodes().Patch(ctx, node, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
		return false, fmt.Errorf("remove taint %s from node %s: %w", key, node, err)
	}
	return true, nil
}
