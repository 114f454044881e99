package k8s

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"glia.dev/glia/internal/config"
)

func TestNodeAddress(t *testing.T) {
	tests := []struct {
		name    string
		addrs   []corev1.NodeAddress
		want    netip.Addr
		wantErr bool
	}{
		{name: "internal IP", addrs: []corev1.NodeAddress{internalIP("198.18.0.11")}, want: netip.MustParseAddr("198.18.0.11")},
		{name: "skips hostname and external IP", addrs: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "lab-node-1"},
			{Type: corev1.NodeExternalIP, Address: "198.18.64.5"},
			internalIP("198.18.0.12"),
		}, want: netip.MustParseAddr("198.18.0.12")},
		{name: "skips IPv6 and garbage", addrs: []corev1.NodeAddress{internalIP("fd00::1"), internalIP("bogus"), internalIP("198.18.0.13")},
			want: netip.MustParseAddr("198.18.0.13")},
		{name: "first IPv4 internal IP wins", addrs: []corev1.NodeAddress{internalIP("198.18.0.14"), internalIP("198.18.0.15")},
			want: netip.MustParseAddr("198.18.0.14")},
		{name: "none", addrs: nil, wantErr: true},
		{name: "only external", addrs: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "198.18.64.5"}}, wantErr: true},
		{name: "only IPv6", addrs: []corev1.NodeAddress{internalIP("fd00::1")}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NodeAddress(node("lab-node-1", "", tt.addrs...))
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "lab-node-1") {
					t.Fatalf("NodeAddress = %v, %v; want an error naming the node", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NodeAddress = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func nodeConfig(ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion(config.NodeConfigGroup + "/" + config.NodeConfigVersion)
	u.SetKind(config.NodeConfigKind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func fakeDynamic(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{config.NodeConfigGVR: config.NodeConfigKind + "List"}, objs...)
}

func TestConfigInputs(t *testing.T) {
	labels := map[string]string{"glia.dev/datapath": "bpf"}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-node-1", Labels: labels}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "glia-system", Name: "glia-config"},
		Data: map[string]string{"routing-mode": "native"}}
	cmElsewhere := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "glia-config"},
		Data: map[string]string{"routing-mode": "tunnel"}}
	ncB := nodeConfig("glia-system", "b-bpf", map[string]any{
		"nodeSelector": map[string]any{"matchLabels": map[string]any{"glia.dev/datapath": "bpf"}},
		"defaults":     map[string]any{"kube-proxy-replacement": "true"},
	})
	ncA := nodeConfig("glia-system", "a-all", map[string]any{"defaults": map[string]any{"enable-bpf-masquerade": "true"}})
	ncOther := nodeConfig("default", "elsewhere", map[string]any{"defaults": map[string]any{"routing-mode": "tunnel"}})
	flags := map[string]string{"mtu": "1400"}

	tests := []struct {
		name string
		kube []runtime.Object
		dyn  []runtime.Object
		want config.Inputs
	}{{
		name: "nothing there",
		want: config.Inputs{Flags: flags, NodeLabels: labels},
	}, {
		name: "ConfigMap only",
		kube: []runtime.Object{cm, cmElsewhere},
		want: config.Inputs{Flags: flags, NodeLabels: labels, ConfigMap: cm.Data, ConfigMapName: "glia-system/glia-config"},
	}, {
		name: "ConfigMap and node configs sorted by name",
		kube: []runtime.Object{cm},
		dyn:  []runtime.Object{ncB, ncOther, ncA},
		want: config.Inputs{Flags: flags, NodeLabels: labels, ConfigMap: cm.Data, ConfigMapName: "glia-system/glia-config",
			NodeConfigs: []config.NodeConfig{
				{Namespace: "glia-system", Name: "a-all", Defaults: map[string]string{"enable-bpf-masquerade": "true"}},
				{Namespace: "glia-system", Name: "b-bpf",
					Selector: metav1.LabelSelector{MatchLabels: map[string]string{"glia.dev/datapath": "bpf"}},
					Defaults: map[string]string{"kube-proxy-replacement": "true"}},
			}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Clients{Kube: fake.NewClientset(tt.kube...), Dynamic: fakeDynamic(tt.dyn...)}
			got, err := ConfigInputs(context.Background(), c, "glia-system", n, flags)
			if err != nil {
				t.Fatalf("ConfigInputs: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ConfigInputs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigInputsErrors(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-node-1"}}
	ctx := context.Background()

	t.Run("ConfigMap read fails", func(t *testing.T) {
		kube := fake.NewClientset()
		kube.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("etcd on fire")
		})
		_, err := ConfigInputs(ctx, &Clients{Kube: kube, Dynamic: fakeDynamic()}, "glia-system", n, nil)
		if err == nil || !strings.Contains(err.Error(), "glia-system/glia-config") || !strings.Contains(err.Error(), "etcd on fire") {
			t.Fatalf("ConfigInputs = %v, want an error naming the ConfigMap and the cause", err)
		}
	})
	t.Run("CRD not installed", func(t *testing.T) {
		dyn := fakeDynamic()
		dyn.PrependReactor("list", "glianodeconfigs", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewNotFound(config.NodeConfigGVR.GroupResource(), "")
		})
		in, err := ConfigInputs(ctx, &Clients{Kube: fake.NewClientset(), Dynamic: dyn}, "glia-system", n, nil)
		if err != nil || in.NodeConfigs != nil {
			t.Fatalf("ConfigInputs = %+v, %v; want no node configs and no error", in, err)
		}
	})
	t.Run("invalid node config is an error naming it", func(t *testing.T) {
		bad := nodeConfig("glia-system", "broken", map[string]any{"defaults": map[string]any{"x": "y"}, "typo": true})
		good := nodeConfig("glia-system", "good", map[string]any{"defaults": map[string]any{"mtu": "1400"}})
		dyn := fakeDynamic(bad, good)
		_, err := ConfigInputs(ctx, &Clients{Kube: fake.NewClientset(), Dynamic: dyn}, "glia-system", n, nil)
		if err == nil || !strings.Contains(err.Error(), "glia-system/broken") {
			t.Fatalf("ConfigInputs error = %v, want one naming glia-system/broken", err)
		}
		// ListNodeConfigs still returns the valid ones beside the error.
		ncs, err := ListNodeConfigs(ctx, dyn, "glia-system")
		if err == nil || !strings.Contains(err.Error(), "typo") {
			t.Errorf("ListNodeConfigs error = %v, want one naming the unknown field", err)
		}
		want := []config.NodeConfig{{Namespace: "glia-system", Name: "good", Defaults: map[string]string{"mtu": "1400"}}}
		if diff := cmp.Diff(want, ncs); diff != "" {
			t.Errorf("ListNodeConfigs (-want +got):\n%s", diff)
		}
	})
}

func TestSetDatapathCondition(t *testing.T) {
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}
	tests := []struct {
		name    string
		bpf     bool
		reason  string
		message string
		want    corev1.ConditionStatus
	}{
		{name: "bpf", bpf: true, reason: "BPFHostRouting", message: "Host Routing: BPF", want: corev1.ConditionTrue},
		{name: "legacy", bpf: false, reason: "LegacyHostRouting", message: "Host Routing: Legacy: set enable-bpf-masquerade=true", want: corev1.ConditionFalse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := node("lab-node-1", "198.19.1.0/24", internalIP("198.18.0.11"))
			n.Status.Conditions = []corev1.NodeCondition{ready}
			cs := fake.NewClientset(n)
			ctx := context.Background()
			// Twice: the second call replaces the condition instead of adding one.
			for i := 0; i < 2; i++ {
				if err := SetDatapathCondition(ctx, cs, "lab-node-1", !tt.bpf, "Other", "other"); err != nil {
					t.Fatalf("SetDatapathCondition: %v", err)
				}
				if err := SetDatapathCondition(ctx, cs, "lab-node-1", tt.bpf, tt.reason, tt.message); err != nil {
					t.Fatalf("SetDatapathCondition: %v", err)
				}
			}
			got, err := cs.CoreV1().Nodes().Get(ctx, "lab-node-1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := []corev1.NodeCondition{
				{Type: ConditionDatapath, Status: tt.want, Reason: tt.reason, Message: tt.message},
				ready,
			}
			opts := []cmp.Option{
				cmpopts.IgnoreFields(corev1.NodeCondition{}, "LastHeartbeatTime", "LastTransitionTime"),
				cmpopts.SortSlices(func(a, b corev1.NodeCondition) bool { return a.Type < b.Type }),
			}
			if diff := cmp.Diff(want, got.Status.Conditions, opts...); diff != "" {
				t.Errorf("conditions (-want +got):\n%s", diff)
			}
			for _, c := range got.Status.Conditions {
				if c.Type == ConditionDatapath && (c.LastHeartbeatTime.IsZero() || c.LastTransitionTime.IsZero()) {
					t.Errorf("condition times not set: %+v", c)
				}
			}
			// The rest of the node is untouched.
			if got.Spec.PodCIDR != "198.19.1.0/24" || len(got.Status.Addresses) != 1 {
				t.Errorf("patch changed other fields: %+v", got)
			}
		})
	}
	t.Run("missing node", func(t *testing.T) {
		err := SetDatapathCondition(context.Background(), fake.NewClientset(), "nope", true, "BPFHostRouting", "x")
		if err == nil || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), string(ConditionDatapath)) {
			t.Fatalf("SetDatapathCondition on a missing node = %v, want an error naming node and condition", err)
		}
	})
}

func TestWaitForNode(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name    string
		node    *corev1.Node
		wantErr string // "" = returns the node at once
	}{
		{name: "registered with address and pod CIDR", node: node("lab-node-1", "198.19.1.0/24", internalIP("198.18.0.11"))},
		{name: "no pod CIDR yet", node: node("lab-node-1", "", internalIP("198.18.0.11")), wantErr: "no spec.podCIDR"},
		{name: "no InternalIP yet", node: node("lab-node-1", "198.19.1.0/24"), wantErr: "no IPv4 InternalIP"},
		{name: "not registered", wantErr: "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var objs []runtime.Object
			if tt.node != nil {
				objs = append(objs, tt.node)
			}
			// A context that is already over: WaitForNode looks once and
			// then says why it is still waiting.
			ctx, cancel := context.WithCancel(context.Background())
			if tt.wantErr != "" {
				cancel()
			}
			defer cancel()
			got, err := WaitForNode(ctx, log, fake.NewClientset(objs...), "lab-node-1")
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("WaitForNode = %v, want context.Canceled with the last reason %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.Name != "lab-node-1" {
				t.Fatalf("WaitForNode = %v, %v", got, err)
			}
		})
	}
}
