// Package k8s is the agent's only door to the Kubernetes API: clients,
// the config sources (ConfigMap glia-config and GliaNodeConfigs), the
// informers that feed the desired-state store, and the Node condition the
// agent publishes.
package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"glia.dev/glia/internal/config"
)

// Clients bundles the typed and dynamic clients.
type Clients struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	Rest    *rest.Config
}

// NewClients builds clients from a kubeconfig file ("" = in-cluster).
func NewClients(kubeconfig string) (*Clients, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "glia-agent"
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Clients{Kube: kc, Dynamic: dc, Rest: cfg}, nil
}

// WaitForNode waits until the Node exists with an InternalIP (set when it
// registers) and a pod CIDR (allocated by kube-controller-manager).
func WaitForNode(ctx context.Context, log *slog.Logger, c kubernetes.Interface, name string) (*corev1.Node, error) {
	logged := false
	for {
		n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if _, aerr := NodeAddress(n); aerr != nil {
				err = aerr
			} else if n.Spec.PodCIDR == "" {
				err = errors.New("node has no spec.podCIDR yet")
			} else {
				return n, nil
			}
		}
		if !logged {
			log.Info("Waiting for Node and its pod CIDR", "node", name, "reason", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s: %w (last: %v)", name, ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// NodeAddress returns the node's InternalIP.
func NodeAddress(n *corev1.Node) (netip.Addr, error) {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("node %s has no IPv4 InternalIP address", n.Name)
}

// ConfigInputs reads every config source for a node: the ConfigMap
// glia-config in namespace ns, the GliaNodeConfigs in ns and the node's
// labels. A missing ConfigMap or CRD is an empty source, not an error.
func ConfigInputs(ctx context.Context, c *Clients, ns string, node *corev1.Node, flags map[string]string) (config.Inputs, error) {
	in := config.Inputs{Flags: flags, NodeLabels: node.Labels}
	cm, err := c.Kube.CoreV1().ConfigMaps(ns).Get(ctx, "glia-config", metav1.GetOptions{})
	switch {
	case err == nil:
		in.ConfigMap = cm.Data
		in.ConfigMapName = ns + "/glia-config"
	case apierrors.IsNotFound(err):
	default:
		return in, fmt.Errorf("read ConfigMap %s/glia-config: %w", ns, err)
	}
	ncs, err := ListNodeConfigs(ctx, c.Dynamic, ns)
	if err != nil {
		return in, err
	}
	in.NodeConfigs = ncs
	return in, nil
}

// ListNodeConfigs reads the GliaNodeConfigs of namespace ns, sorted by name.
func ListNodeConfigs(ctx context.Context, dyn dynamic.Interface, ns string) ([]config.NodeConfig, error) {
	list, err := dyn.Resource(config.NodeConfigGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil // the CRD is not installed: no node configs
	}
	if err != nil {
		return nil, fmt.Errorf("list GliaNodeConfigs in %s: %w", ns, err)
	}
	var out []config.NodeConfig
	var errs []error
	for i := range list.Items {
		nc, err := config.NodeConfigFromUnstructured(&list.Items[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, nc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

// ConditionDatapath is the Node condition the agent publishes.
const ConditionDatapath corev1.NodeConditionType = "GliaBPFHostRouting"

// SetDatapathCondition publishes the node's host-routing mode as a Node
// condition: True when BPF host routing runs, False with the reason and
// the fix when the node fell back to legacy.
func SetDatapathCondition(ctx context.Context, c kubernetes.Interface, node string, bpf bool, reason, message string) error {
	return setCondition(ctx, c, node, ConditionDatapath, bpf, reason, message)
}

// ConditionConfigPending is the Node condition saying the node's config
// sources would change its agent's config at the agent's next restart.
const ConditionConfigPending corev1.NodeConditionType = "GliaConfigPending"

// SetConfigPendingCondition publishes whether a config change waits for
// the agent's restart: True with what would change (or why the sources do
// not resolve), False when the agent runs what its sources say.
func SetConfigPendingCondition(ctx context.Context, c kubernetes.Interface, node string, pending bool, reason, message string) error {
	return setCondition(ctx, c, node, ConditionConfigPending, pending, reason, message)
}

// setCondition patches one condition of node's status (the strategic
// merge keys conditions by type: the others stay).
func setCondition(ctx context.Context, c kubernetes.Interface, node string, typ corev1.NodeConditionType, on bool, reason, message string) error {
	status := corev1.ConditionFalse
	if on {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	patch := map[string]any{"status": map[string]any{"conditions": []any{map[string]any{
		"type": string(typ), "status": string(status), "reason": reason, "message": message,
		"lastHeartbeatTime": now, "lastTransitionTime": now,
	}}}}
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = c.CoreV1().Nodes().PatchStatus(ctx, node, b)
	if err != nil {
		return fmt.Errorf("set %s condition on node %s: %w", typ, node, err)
	}
	return nil
}
