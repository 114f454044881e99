package k8s

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"glia.dev/glia/internal/config"
)

// TestConfigWatch follows the sources through the informers: it reads
// what ConfigInputs reads at start, then sees a label, a new node config,
// a ConfigMap edit and a node config that does not parse.
func TestConfigWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-node-2", Labels: map[string]string{"zone": "a"}}}
	other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-node-1", Labels: map[string]string{"io.glia.enable-ebpf": "true"}}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "glia-system", Name: "glia-config"},
		Data: map[string]string{"kube-proxy-replacement": "true"}}
	cmOther := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "glia-system", Name: "not-glia-config"},
		Data: map[string]string{"mtu": "1400"}}
	kube := fake.NewClientset(n, other, cm, cmOther)
	dyn := fakeDynamic()
	c := &Clients{Kube: kube, Dynamic: dyn}
	flags := map[string]string{"mtu": "1450"}

	w := NewConfigWatch(c, "glia-system", "lab-node-2")
	w.Start(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for !w.Synced() {
		if time.Now().After(deadline) {
			t.Fatal("the config watch did not sync in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// eventually waits until the watch's inputs satisfy ok.
	eventually := func(what string, ok func(config.Inputs, error) bool) (config.Inputs, error) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			in, err := w.Inputs(flags)
			if ok(in, err) {
				return in, err
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not seen in 10s; inputs %+v, error %v", what, in, err)
			}
			select {
			case <-w.Changed():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}

	start, err := ConfigInputs(ctx, c, "glia-system", n, flags)
	if err != nil {
		t.Fatal(err)
	}
	got, err := w.Inputs(flags)
	if err != nil {
		t.Fatalf("Inputs: %v", err)
	}
	if diff := cmp.Diff(start, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("the watch's inputs differ from what the agent read at start (-start +watch):\n%s", diff)
	}

	// The story: a node config, then the label that makes it select the node.
	nc := nodeConfig("glia-system", "glia-fix", map[string]any{
		"nodeSelector": map[string]any{"matchLabels": map[string]any{"io.glia.enable-ebpf": "true"}},
		"defaults":     map[string]any{"enable-bpf-masquerade": "true"},
	})
	if _, err := dyn.Resource(config.NodeConfigGVR).Namespace("glia-system").Create(ctx, nc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the new node config", func(in config.Inputs, err error) bool {
		return err == nil && len(in.NodeConfigs) == 1 && in.NodeConfigs[0].Name == "glia-fix"
	})
	n2 := n.DeepCopy()
	n2.Labels["io.glia.enable-ebpf"] = "true"
	if _, err := kube.CoreV1().Nodes().Update(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	in, _ := eventually("the node's new label", func(in config.Inputs, err error) bool {
		return err == nil && in.NodeLabels["io.glia.enable-ebpf"] == "true"
	})
	if in.NodeLabels["zone"] != "a" {
		t.Errorf("node labels %v lost zone=a", in.NodeLabels)
	}

	// A ConfigMap edit.
	cm2 := cm.DeepCopy()
	cm2.Data["enable-bpf-masquerade"] = "maybe"
	if _, err := kube.CoreV1().ConfigMaps("glia-system").Update(ctx, cm2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the ConfigMap edit", func(in config.Inputs, err error) bool {
		return err == nil && in.ConfigMap["enable-bpf-masquerade"] == "maybe" && in.ConfigMapName == "glia-system/glia-config"
	})

	// A node config that does not parse is an error naming it, the others are still read.
	bad := nodeConfig("glia-system", "bad", map[string]any{"defaults": map[string]any{"mtu": int64(1400)}})
	if _, err := dyn.Resource(config.NodeConfigGVR).Namespace("glia-system").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	in, err = eventually("the bad node config", func(_ config.Inputs, err error) bool { return err != nil })
	if !strings.Contains(err.Error(), "GliaNodeConfig glia-system/bad") {
		t.Errorf("error %q does not name the bad node config", err)
	}
	if len(in.NodeConfigs) != 1 || in.NodeConfigs[0].Name != "glia-fix" {
		t.Errorf("node configs %+v, want glia-fix alone", in.NodeConfigs)
	}

	// The ConfigMap deleted: no ConfigMap source.
	if err := kube.CoreV1().ConfigMaps("glia-system").Delete(ctx, "glia-config", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the ConfigMap deleted", func(in config.Inputs, _ error) bool { return in.ConfigMap == nil && in.ConfigMapName == "" })
}
