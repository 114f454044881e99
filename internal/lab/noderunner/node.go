package noderunner

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"golang.org/x/sys/unix"
)

const (
	// KubeletVersion is the kubelet version the runner reports.
	KubeletVersion = "v1.37.2"
	// RuntimeVersion is the container runtime the runner reports.
	RuntimeVersion = "glia-lab://0.1"
	// NodeLeaseNamespace holds node leases.
	NodeLeaseNamespace = "kube-node-lease"
	// LeaseDurationSeconds is the node lease's duration.
	LeaseDurationSeconds = 40
)

// nodeIdentity is what the runner reports about its node.
type nodeIdentity struct {
	name string
	ip   string
	// kubeletPort is the kubelet API's port (0: not served).
	kubeletPort int32
	// taints are registered with the Node (--register-with-taints); they
	// are never written again afterwards (whoever removes one, e.g. an
	// agent once ready, keeps it removed).
	taints []corev1.Taint
	// networkReady returns nil when pods can get a network.
	networkReady func() error
	now          func() time.Time
}

func nodeLabels(name string) map[string]string {
	return map[string]string{
		"kubernetes.io/hostname":  name,
		"kubernetes.io/os":        "linux",
		"kubernetes.io/arch":      runtime.GOARCH,
		"beta.kubernetes.io/os":   "linux",
		"beta.kubernetes.io/arch": runtime.GOARCH,
	}
}

func kernelVersion() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// conditions returns the node conditions for now, keeping transition times
// of conditions whose status did not change.
func (n *nodeIdentity) conditions(old []corev1.NodeCondition) []corev1.NodeCondition {
	now := metav1.NewTime(n.now())
	ready := corev1.NodeCondition{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		Reason: "KubeletReady", Message: "glia lab node runner is posting ready status",
	}
	if n.networkReady != nil {
		if err := n.networkReady(); err != nil {
			ready.Status = corev1.ConditionFalse
			ready.Reason = "KubeletNotReady"
			ready.Message = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:" + err.Error()
		}
	}
	conds := []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"},
		ready,
	}
	for i := range conds {
		conds[i].LastHeartbeatTime = now
		conds[i].LastTransitionTime = now
		for _, o := range old {
			if o.Type == conds[i].Type && o.Status == conds[i].Status && !o.LastTransitionTime.IsZero() {
				conds[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	return conds
}

// nodeAllocatable is the capacity the runner reports; it is also the
// default of a container's unset limits in resourceFieldRef.
func nodeAllocatable() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("2"),
		corev1.ResourceMemory:           resource.MustParse("8Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
	}
}

// status returns the node status the runner owns, on top of old (fields it
// does not own, e.g. set by others, are kept).
func (n *nodeIdentity) status(old corev1.NodeStatus) corev1.NodeStatus {
	st := *old.DeepCopy()
	res := nodeAllocatable()
	st.Capacity = res
	st.Allocatable = res.DeepCopy()
	st.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n.ip},
		{Type: corev1.NodeHostName, Address: n.name},
	}
	st.Conditions = n.conditions(old.Conditions)
	st.DaemonEndpoints.KubeletEndpoint.Port = n.kubeletPort
	st.NodeInfo = corev1.NodeSystemInfo{
		MachineID:               old.NodeInfo.MachineID,
		SystemUUID:              old.NodeInfo.SystemUUID,
		BootID:                  old.NodeInfo.BootID,
		KernelVersion:           kernelVersion(),
		OSImage:                 "glia lab node",
		ContainerRuntimeVersion: RuntimeVersion,
		KubeletVersion:          KubeletVersion,
		KubeProxyVersion:        "",
		OperatingSystem:         "linux",
		Architecture:            runtime.GOARCH,
	}
	st.Phase = ""
	return st
}

// registerNode creates the Node or, when it exists, updates its labels and
// status. It never writes the spec of an existing node (spec.podCIDR
// belongs to the controller-manager).
func registerNode(ctx context.Context, c kubernetes.Interface, id *nodeIdentity) (*corev1.Node, error) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: id.name, Labels: nodeLabels(id.name)},
		Spec:       corev1.NodeSpec{Taints: id.taints},
	}
	node.Status = id.status(corev1.NodeStatus{})
	created, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err == nil {
		// The API server drops status on create; write it.
		return updateNodeStatus(ctx, c, id)
	}
	if !apierrors.IsAlreadyExists(err) {
		return created, fmt.Errorf("create node: %w", err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.CoreV1().Nodes().Get(ctx, id.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		changed := false
		// A Node object made by someone else before any kubelet
		// registered it (the lab pre-creates nodes to label them) gets
		// the registration taints once, as if the runner had created it;
		// a node that already reported status keeps the taints it has.
		if !registeredBefore(cur) {
			for _, t := range id.taints {
				if !hasTaint(cur.Spec.Taints, t) {
					cur.Spec.Taints = append(cur.Spec.Taints, t)
					changed = true
				}
			}
		}
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		for k, v := range nodeLabels(id.name) {
			if cur.Labels[k] != v {
				cur.Labels[k] = v
				changed = true
			}
		}
		if !changed {
			return nil
		}
		_, err = c.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update node labels: %w", err)
	}
	return updateNodeStatus(ctx, c, id)
}

// registeredBefore reports whether a kubelet already posted the node's
// status (it has a Ready condition).
func registeredBefore(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return true
		}
	}
	return false
}

func hasTaint(taints []corev1.Taint, t corev1.Taint) bool {
	for _, x := range taints {
		if x.Key == t.Key && x.Effect == t.Effect {
			return true
		}
	}
	return false
}

// ParseTaints parses kubelet's --register-with-taints values:
// key=value:Effect or key:Effect, Effect one of NoSchedule,
// PreferNoSchedule, NoExecute.
func ParseTaints(specs []string) ([]corev1.Taint, error) {
	var out []corev1.Taint
	for _, s := range specs {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		kv, effect, ok := strings.Cut(s, ":")
		if !ok {
			return nil, fmt.Errorf("invalid taint %q (--register-with-taints): want key=value:Effect", s)
		}
		key, value, _ := strings.Cut(kv, "=")
		t := corev1.Taint{Key: key, Value: value, Effect: corev1.TaintEffect(effect)}
		switch t.Effect {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			return nil, fmt.Errorf("invalid taint %q (--register-with-taints): effect %q is not NoSchedule, PreferNoSchedule or NoExecute", s, effect)
		}
		if errs := validation.IsQualifiedName(key); len(errs) > 0 {
			return nil, fmt.Errorf("invalid taint %q (--register-with-taints): key: %s", s, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(value); len(errs) > 0 {
			return nil, fmt.Errorf("invalid taint %q (--register-with-taints): value: %s", s, strings.Join(errs, "; "))
		}
		if hasTaint(out, t) {
			return nil, fmt.Errorf("invalid --register-with-taints: taint %s:%s given twice", key, effect)
		}
		out = append(out, t)
	}
	return out, nil
}

// updateNodeStatus refreshes the node's status and heartbeat.
func updateNodeStatus(ctx context.Context, c kubernetes.Interface, id *nodeIdentity) (*corev1.Node, error) {
	var out *corev1.Node
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.CoreV1().Nodes().Get(ctx, id.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = id.status(cur.Status)
		out, err = c.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update node status: %w", err)
	}
	return out, nil
}

// renewLease creates or renews the node's Lease in kube-node-lease.
func renewLease(ctx context.Context, c kubernetes.Interface, id *nodeIdentity, nodeUID string) (*coordinationv1.Lease, error) {
	leases := c.CoordinationV1().Leases(NodeLeaseNamespace)
	now := metav1.NewMicroTime(id.now())
	cur, err := leases.Get(ctx, id.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: id.name, Namespace: NodeLeaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(id.name),
				LeaseDurationSeconds: ptr.To[int32](LeaseDurationSeconds),
				RenewTime:            &now,
			},
		}
		if nodeUID != "" {
			l.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: id.name, UID: types.UID(nodeUID),
			}}
		}
		created, err := leases.Create(ctx, l, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create node lease: %w", err)
		}
		return created, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get node lease: %w", err)
	}
	cur.Spec.HolderIdentity = ptr.To(id.name)
	cur.Spec.LeaseDurationSeconds = ptr.To[int32](LeaseDurationSeconds)
	cur.Spec.RenewTime = &now
	updated, err := leases.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("renew node lease: %w", err)
	}
	return updated, nil
}

// nodeLoop registers the node, then keeps its status and lease fresh until
// ctx ends. Failures are logged and retried on the next tick.
func (r *runner) nodeLoop(ctx context.Context, registered chan<- struct{}) {
	var nodeUID string
	backoff := time.Second
	for {
		n, err := registerNode(ctx, r.client, r.id)
		if err == nil {
			nodeUID = string(n.UID)
			break
		}
		r.log.Warn("register node failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.cfg.StatusInterval)
	}
	r.log.Info("node registered", "ip", r.id.ip)
	close(registered)
	if _, err := renewLease(ctx, r.client, r.id, nodeUID); err != nil {
		r.log.Warn("node lease", "err", err)
	}
	lastReady := ""
	t := time.NewTicker(r.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := renewLease(ctx, r.client, r.id, nodeUID); err != nil && ctx.Err() == nil {
			r.log.Warn("node lease", "err", err)
		}
		n, err := updateNodeStatus(ctx, r.client, r.id)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("node heartbeat", "err", err)
			}
			continue
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if s := string(c.Status) + " " + c.Message; s != lastReady {
					lastReady = s
					r.log.Info("node Ready condition", "status", c.Status, "reason", c.Reason, "message", strings.TrimSpace(c.Message))
				}
			}
		}
	}
}
