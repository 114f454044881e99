package noderunner

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"golang.org/x/sys/unix"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestRegisterNodeCreates(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	client := fake.NewClientset()
	id := &nodeIdentity{name: "lab-node-1", ip: "198.18.0.11", now: clock.now}
	n, err := registerNode(context.Background(), client, id)
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		"kubernetes.io/hostname":  "lab-node-1",
		"kubernetes.io/os":        "linux",
		"kubernetes.io/arch":      runtime.GOARCH,
		"beta.kubernetes.io/os":   "linux",
		"beta.kubernetes.io/arch": runtime.GOARCH,
	}
	if diff := cmp.Diff(wantLabels, n.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	wantAddrs := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.11"}, {Type: corev1.NodeHostName, Address: "lab-node-1"}}
	if diff := cmp.Diff(wantAddrs, n.Status.Addresses); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	for name, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "2", corev1.ResourceMemory: "8Gi", corev1.ResourcePods: "110"} {
		for _, rl := range []corev1.ResourceList{n.Status.Capacity, n.Status.Allocatable} {
			if q := rl[name]; q.Cmp(resource.MustParse(want)) != 0 {
				t.Errorf("%s = %s, want %s", name, q.String(), want)
			}
		}
	}
	hb := metav1.NewTime(clock.t)
	wantConds := []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: hb, LastTransitionTime: hb},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: hb, LastTransitionTime: hb},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: hb, LastTransitionTime: hb},
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: hb, LastTransitionTime: hb},
	}
	if diff := cmp.Diff(wantConds, n.Status.Conditions, cmpopts.IgnoreFields(corev1.NodeCondition{}, "Message")); diff != "" {
		t.Errorf("conditions (-want +got):\n%s", diff)
	}
	if n.Status.NodeInfo.KubeletVersion != "v1.37.2" || n.Status.NodeInfo.ContainerRuntimeVersion != "glia-lab://0.1" ||
		n.Status.NodeInfo.OperatingSystem != "linux" || n.Status.NodeInfo.Architecture != runtime.GOARCH {
		t.Errorf("nodeInfo = %+v", n.Status.NodeInfo)
	}

	// A heartbeat later: heartbeat time moves, transition time stays.
	clock.t = clock.t.Add(10 * time.Second)
	n, err = updateNodeStatus(context.Background(), client, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Status.Conditions {
		if !c.LastHeartbeatTime.Time.Equal(clock.t) || !c.LastTransitionTime.Time.Equal(hb.Time) {
			t.Errorf("condition %s heartbeat %v transition %v after a heartbeat", c.Type, c.LastHeartbeatTime, c.LastTransitionTime)
		}
	}
}

func TestRegisterNodeUpdateKeepsSpec(t *testing.T) {
	existing := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "lab-node-2", Labels: map[string]string{"team": "net"}},
		Spec:       corev1.NodeSpec{PodCIDR: "198.19.2.0/24", PodCIDRs: []string{"198.19.2.0/24"}},
	}
	client := fake.NewClientset(existing)
	notReady := errors.New("no glia network list in /run/glia-lab/nodes/lab-node-2/cni")
	id := &nodeIdentity{name: "lab-node-2", ip: "198.18.0.12", now: time.Now, networkReady: func() error { return notReady }}
	n, err := registerNode(context.Background(), client, id)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(existing.Spec, n.Spec); diff != "" {
		t.Errorf("spec changed (-want +got):\n%s", diff)
	}
	if n.Labels["team"] != "net" || n.Labels["kubernetes.io/hostname"] != "lab-node-2" {
		t.Errorf("labels = %v", n.Labels)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && (c.Status != corev1.ConditionFalse || c.Reason != "KubeletNotReady") {
			t.Errorf("Ready = %+v with the CNI config missing, want False", c)
		}
	}
}

func TestRenewLease(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	client := fake.NewClientset()
	id := &nodeIdentity{name: "lab-node-1", ip: "198.18.0.11", now: clock.now}
	l, err := renewLease(context.Background(), client, id, "node-uid-1")
	if err != nil {
		t.Fatal(err)
	}
	want := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: "lab-node-1", Namespace: "kube-node-lease",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "lab-node-1", UID: "node-uid-1"}},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To("lab-node-1"),
			LeaseDurationSeconds: ptr.To[int32](40),
			RenewTime:            ptr.To(metav1.NewMicroTime(clock.t)),
		},
	}
	ignore := cmp.Options{cmpopts.IgnoreFields(metav1.ObjectMeta{}, "ResourceVersion", "ManagedFields", "CreationTimestamp", "UID", "Generation"), cmpopts.IgnoreTypes(metav1.TypeMeta{})}
	if diff := cmp.Diff(want, l, ignore); diff != "" {
		t.Errorf("lease (-want +got):\n%s", diff)
	}
	clock.t = clock.t.Add(10 * time.Second)
	if _, err := renewLease(context.Background(), client, id, "node-uid-1"); err != nil {
		t.Fatal(err)
	}
	got, err := client.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), "lab-node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Spec.RenewTime.Time.Equal(clock.t) {
		t.Errorf("renewTime = %v, want %v", got.Spec.RenewTime, clock.t)
	}
}

func TestParseTaints(t *testing.T) {
	got, err := ParseTaints([]string{"node.glia.dev/agent-not-ready=true:NoSchedule", "dedicated:NoExecute", " "})
	if err != nil {
		t.Fatal(err)
	}
	want := []corev1.Taint{
		{Key: "node.glia.dev/agent-not-ready", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		{Key: "dedicated", Effect: corev1.TaintEffectNoExecute},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("taints (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"novalue", "k=v:Sometimes", "bad key!=v:NoSchedule", "k=v v:NoSchedule"} {
		if _, err := ParseTaints([]string{bad}); err == nil {
			t.Errorf("ParseTaints(%q) accepted", bad)
		}
	}
	if _, err := ParseTaints([]string{"k=a:NoSchedule", "k=b:NoSchedule"}); err == nil {
		t.Error("the same key and effect twice accepted")
	}
}

func TestRegisterWithTaints(t *testing.T) {
	taint := corev1.Taint{Key: "node.glia.dev/agent-not-ready", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	ctx := context.Background()

	// A new node is created with the taints.
	client := fake.NewClientset()
	id := &nodeIdentity{name: "lab-node-1", ip: "198.18.0.11", now: time.Now, taints: []corev1.Taint{taint}}
	n, err := registerNode(ctx, client, id)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]corev1.Taint{taint}, n.Spec.Taints); diff != "" {
		t.Errorf("taints at creation (-want +got):\n%s", diff)
	}
	// The agent removes it once ready; heartbeats and a runner restart
	// (registration of an existing, registered node) never add it back.
	n.Spec.Taints = nil
	if _, err := client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := updateNodeStatus(ctx, client, id); err != nil {
		t.Fatal(err)
	}
	if n, err = registerNode(ctx, client, id); err != nil {
		t.Fatal(err)
	}
	if len(n.Spec.Taints) != 0 {
		t.Errorf("taint came back after removal: %v", n.Spec.Taints)
	}

	// A node object made before any kubelet registered it (the lab
	// labels nodes up front) gets the taints at the first registration.
	pre := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-node-2", Labels: map[string]string{"io.glia.enable-ebpf": "true"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "other", Effect: corev1.TaintEffectNoSchedule}}}}
	client = fake.NewClientset(pre)
	id = &nodeIdentity{name: "lab-node-2", ip: "198.18.0.12", now: time.Now, taints: []corev1.Taint{taint}}
	if n, err = registerNode(ctx, client, id); err != nil {
		t.Fatal(err)
	}
	want := []corev1.Taint{{Key: "other", Effect: corev1.TaintEffectNoSchedule}, taint}
	if diff := cmp.Diff(want, n.Spec.Taints); diff != "" || n.Labels["io.glia.enable-ebpf"] != "true" {
		t.Errorf("pre-created node: taints (-want +got):\n%s labels %v", diff, n.Labels)
	}
}

func TestRunnerRefusesTheHostMountNamespace(t *testing.T) {
	// The test shares its mount namespace with `go test`: the runner must
	// refuse before it mounts anything.
	dst := t.TempDir()
	err := setupNodeMounts([]Bind{{Src: t.TempDir(), Dst: dst}})
	if err == nil {
		unix.Unmount(dst, unix.MNT_DETACH) // undo what must not have happened
	}
	if err == nil || !strings.Contains(err.Error(), "mount namespace of its own") {
		t.Fatalf("setupNodeMounts outside a mount namespace of its own = %v, want a refusal", err)
	}
}
