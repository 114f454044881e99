package agent

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/k8s"
	"glia.dev/glia/internal/metrics"
)

// syncBuffer is a log sink safe for the watch's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestConfigPending runs the agent's config watch against a fake API
// server through the story: nothing pending at start; the node labelled
// for the story's node config; a bad value in the ConfigMap; and back.
func TestConfigPending(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-node-2", Labels: map[string]string{"kubernetes.io/hostname": "lab-node-2"}}}
	// A condition left by the agent's previous run.
	node.Status.Conditions = []corev1.NodeCondition{{Type: k8s.ConditionConfigPending, Status: corev1.ConditionTrue, Reason: "RestartToApply"}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "glia-system", Name: "glia-config"},
		Data: map[string]string{config.KeyKubeProxyReplacement: "true"}}
	nc := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{
		"nodeSelector": map[string]any{"matchLabels": map[string]any{"io.glia.enable-ebpf": "true"}},
		"defaults":     map[string]any{config.KeyBPFMasquerade: "true"},
	}}}
	nc.SetAPIVersion(config.NodeConfigGroup + "/" + config.NodeConfigVersion)
	nc.SetKind(config.NodeConfigKind)
	nc.SetNamespace("glia-system")
	nc.SetName("glia-fix-full")
	kube := fake.NewClientset(node, cm)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{config.NodeConfigGVR: config.NodeConfigKind + "List"}, nc)
	clients := &k8s.Clients{Kube: kube, Dynamic: dyn}

	var logs syncBuffer
	a := &Agent{log: slog.New(slog.NewTextHandler(&logs, nil)), clients: clients, metrics: metrics.New(),
		cfg: Config{Namespace: "glia-system", NodeName: "lab-node-2"}}
	in, err := k8s.ConfigInputs(ctx, clients, "glia-system", node, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.conf, _, err = config.Resolve(in); err != nil {
		t.Fatal(err)
	}
	a.watchConfig(ctx)

	// await waits until the pending set satisfies ok and the Node
	// condition says cond.
	await := func(what string, cond corev1.ConditionStatus, ok func(*api.ConfigPending) bool) *api.ConfigPending {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			p := a.pending.get()
			n, err := kube.CoreV1().Nodes().Get(ctx, "lab-node-2", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var c corev1.ConditionStatus
			for _, nc := range n.Status.Conditions {
				if nc.Type == k8s.ConditionConfigPending {
					c = nc.Status
				}
			}
			if a.pending.published() && ok(p) && c == cond {
				return p
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not seen in 10s: pending %+v, condition %s=%q\nlog:\n%s", what, p, k8s.ConditionConfigPending, c, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	pendingGauges := func() map[string]float64 {
		return gauges(t, a.metrics, metrics.NameConfigPendingChanges, metrics.NameConfigPendingError)
	}
	wantGauges := func(changes, failed float64) {
		t.Helper()
		g := pendingGauges()
		if g[metrics.NameConfigPendingChanges+"{}"] != changes || g[metrics.NameConfigPendingError+"{}"] != failed {
			t.Errorf("pending metrics %v, want %g changes, error %g", g, changes, failed)
		}
	}

	await("nothing pending at start (and the old condition replaced)", corev1.ConditionFalse, func(p *api.ConfigPending) bool { return p == nil })
	wantGauges(0, 0)

	// The story: label the node; the node config now selects it.
	n := node.DeepCopy()
	n.Labels["io.glia.enable-ebpf"] = "true"
	if _, err := kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := await("the label's change", corev1.ConditionTrue, func(p *api.ConfigPending) bool { return p != nil && len(p.Changes) > 0 })
	if len(p.Changes) != 1 || p.Changes[0] != (api.PendingChange{Key: config.KeyBPFMasquerade, From: "false", To: "true",
		Source: "GliaNodeConfig glia-system/glia-fix-full", Disruptive: p.Changes[0].Disruptive}) || p.Since.IsZero() {
		t.Errorf("pending = %+v, want enable-bpf-masquerade false→true from GliaNodeConfig glia-system/glia-fix-full, with its time", p)
	}
	wantGauges(1, 0)
	if !strings.Contains(logs.String(), "Config pending: enable-bpf-masquerade false→true (GliaNodeConfig glia-system/glia-fix-full), restart the agent pod to apply") {
		t.Errorf("no log line of the pending change:\n%s", logs.String())
	}
	if s := a.pending.get(); s == p || &s.Changes[0] == &p.Changes[0] {
		t.Error("get returns the agent's own pending set, not a copy")
	}

	// A bad value: a pending error, the agent carries on.
	cm2 := cm.DeepCopy()
	cm2.Data[config.KeyBPFMasquerade] = "maybe"
	if _, err := kube.CoreV1().ConfigMaps("glia-system").Update(ctx, cm2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p = await("the bad value", corev1.ConditionTrue, func(p *api.ConfigPending) bool { return p != nil && p.Error != "" })
	if !strings.Contains(p.Error, `"maybe"`) || !strings.Contains(p.Error, "ConfigMap glia-system/glia-config") || len(p.Changes) != 0 {
		t.Errorf("pending error %+v does not name the bad value and its source", p)
	}
	wantGauges(0, 1)

	// Back as it was: nothing pending.
	if _, err := kube.CoreV1().ConfigMaps("glia-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.Labels = map[string]string{"kubernetes.io/hostname": "lab-node-2"}
	if _, err := kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	await("nothing pending again", corev1.ConditionFalse, func(p *api.ConfigPending) bool { return p == nil })
	wantGauges(0, 0)
	if !strings.Contains(logs.String(), "Config pending: none") {
		t.Errorf("no log line when the pending change went away:\n%s", logs.String())
	}
}

// published reports whether a first pending set (even none) was said.
func (p *pendingConfig) published() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.said
}
