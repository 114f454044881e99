package k8s

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestRemoveTaint(t *testing.T) {
	other := corev1.Taint{Key: "dedicated", Value: "infra", Effect: corev1.TaintEffectNoSchedule}
	tests := []struct {
		name        string
		taints      []corev1.Taint
		wantRemoved bool
		wantTaints  []corev1.Taint
		wantPatches int
	}{
		{name: "NoSchedule removed, others kept",
			taints:      []corev1.Taint{other, {Key: TaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule}},
			wantRemoved: true, wantTaints: []corev1.Taint{other}, wantPatches: 1},
		{name: "every effect removed",
			taints: []corev1.Taint{{Key: TaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule},
				{Key: TaintAgentNotReady, Effect: corev1.TaintEffectNoExecute}},
			wantRemoved: true, wantTaints: []corev1.Taint{}, wantPatches: 1},
		{name: "absent: no write", taints: []corev1.Taint{other}, wantTaints: []corev1.Taint{other}},
		{name: "no taints at all: no write"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-node-1"}, Spec: corev1.NodeSpec{Taints: tt.taints}}
			c := fake.NewClientset(n)
			patches := 0
			c.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
				patches++
				return false, nil, nil
			})
			removed, err := RemoveTaint(context.Background(), c, "lab-node-1", TaintAgentNotReady)
			if err != nil {
				t.Fatal(err)
			}
			if removed != tt.wantRemoved || patches != tt.wantPatches {
				t.Fatalf("removed %t with %d patches, want %t with %d", removed, patches, tt.wantRemoved, tt.wantPatches)
			}
			got, _ := c.CoreV1().Nodes().Get(context.Background(), "lab-node-1", metav1.GetOptions{})
			if diff := cmp.Diff(tt.wantTaints, got.Spec.Taints); diff != "" {
				t.Errorf("taints (-want +got):\n%s", diff)
			}
			// Idempotent: a second call finds nothing to do.
			if removed, err := RemoveTaint(context.Background(), c, "lab-node-1", TaintAgentNotReady); removed || err != nil {
				t.Fatalf("second call: removed %t, %v", removed, err)
			}
		})
	}
	t.Run("patch refused", func(t *testing.T) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-node-1"},
			Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: TaintAgentNotReady, Effect: corev1.TaintEffectNoSchedule}}}}
		c := fake.NewClientset(n)
		c.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New(`nodes "lab-node-1" is forbidden`)
		})
		if _, err := RemoveTaint(context.Background(), c, "lab-node-1", TaintAgentNotReady); err == nil {
			t.Fatal("a refused patch is not an error")
		}
	})
}
