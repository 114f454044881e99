package k8s

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
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

func TestUninstalled(t *testing.T) {
	now := metav1.Now()
	live := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "glia-system", Name: "glia"}}
	deleting := live.DeepCopy()
	deleting.DeletionTimestamp = &now
	deleting.Finalizers = []string{"foregroundDeletion"}
	gr := schema.GroupResource{Group: "apps", Resource: "daemonsets"}
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		getErr  error
		want    bool
		wantErr bool
	}{
		{name: "in place", objs: []runtime.Object{live}, want: false},
		{name: "being deleted", objs: []runtime.Object{deleting}, want: true},
		{name: "gone", want: true},
		{name: "service account gone", getErr: apierrors.NewUnauthorized("token"), want: true},
		{name: "rbac gone", getErr: apierrors.NewForbidden(gr, "glia", errors.New("denied")), want: true},
		{name: "api unreachable", getErr: errors.New("connection refused"), want: false, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientset(tc.objs...)
			if tc.getErr != nil {
				c.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tc.getErr })
			}
			got, why, err := Uninstalled(context.Background(), c, "glia-system", "glia")
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("Uninstalled = %t, %q, %v; want %t (error %t)", got, why, err, tc.want, tc.wantErr)
			}
			if err == nil && why == "" {
				t.Error("no reason given")
			}
		})
	}
}
