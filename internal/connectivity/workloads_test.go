package connectivity

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// readyPod is a pod as a kubelet would report it, Ready on node.
func readyPod(ns, name, label, node, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{labelName: label}},
		Spec:       corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func slice(ns, svc string, ips ...string) *discoveryv1.EndpointSlice {
	ready := true
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-abc",
		Labels: map[string]string{"kubernetes.io/service-name": svc}}}
	for _, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return es
}

func TestDeployAndWaitReady(t *testing.T) {
	ctx := context.Background()
	p := DefaultParams()
	p.ReadyTimeout = 5 * time.Second
	ns := p.Namespace
	cs := fake.NewClientset()
	var out bytes.Buffer
	if err := Deploy(ctx, cs, p, true, &out); err != nil {
		t.Fatal(err)
	}
	// Deploying again over a kept namespace is fine.
	if err := Deploy(ctx, cs, p, true, &out); err != nil {
		t.Fatalf("second Deploy: %v", err)
	}
	deps, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range deps.Items {
		names = append(names, d.Name)
		if d.Labels[LabelPartOf] != PartOf {
			t.Errorf("deployment %s lacks label %s", d.Name, LabelPartOf)
		}
	}
	if d := cmp.Diff([]string{"client", "client2", "echo-other-node", "echo-same-node"}, names); d != "" {
		t.Errorf("deployments (-want +got):\n%s", d)
	}
	other, _ := cs.AppsV1().Deployments(ns).Get(ctx, NameEchoOtherNode, metav1.GetOptions{})
	if a := other.Spec.Template.Spec.Affinity; a == nil || a.PodAntiAffinity == nil ||
		a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels[labelName] != NameClient {
		t.Errorf("echo-other-node has no anti-affinity to client: %+v", a)
	}
	svc, _ := cs.CoreV1().Services(ns).Get(ctx, NameEchoOtherNode, metav1.GetOptions{})
	if svc.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("service echo-other-node is %s, want NodePort", svc.Spec.Type)
	}
	ds, _ := cs.AppsV1().DaemonSets(ns).Get(ctx, NameHostNetns, metav1.GetOptions{})
	if !ds.Spec.Template.Spec.HostNetwork {
		t.Error("host-netns daemonset is not hostNetwork")
	}

	nodes := []Node{{Name: "n1", IP: "198.18.0.11"}, {Name: "n2", IP: "198.18.0.12"}}
	for _, p := range []*corev1.Pod{
		readyPod(ns, "client-1", NameClient, "n1", "198.19.1.2"),
		readyPod(ns, "client2-1", NameClient2, "n1", "198.19.1.3"),
		readyPod(ns, "echo-same-node-1", NameEchoSameNode, "n1", "198.19.1.4"),
		readyPod(ns, "echo-other-node-1", NameEchoOtherNode, "n2", "198.19.2.4"),
		readyPod(ns, "host-netns-a", NameHostNetns, "n1", "198.18.0.11"),
	} {
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, es := range []*discoveryv1.EndpointSlice{
		slice(ns, NameEchoSameNode, "198.19.1.4"),
		slice(ns, NameEchoOtherNode, "198.19.2.4"),
		slice(ns, NameEcho, "198.19.1.4", "198.19.2.4"),
	} {
		if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The host pod of n2 is missing: the wait names it.
	short := p
	short.ReadyTimeout = 1500 * time.Millisecond
	if _, err := WaitReady(ctx, cs, short, nodes, true); err == nil || !strings.Contains(err.Error(), "daemonset host-netns has no Ready pod on n2") {
		t.Fatalf("WaitReady without n2's host pod: %v", err)
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, readyPod(ns, "host-netns-b", NameHostNetns, "n2", "198.18.0.12"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w, err := WaitReady(ctx, cs, p, nodes, true)
	if err != nil {
		t.Fatal(err)
	}
	if w.Client.Name != "client-1" || w.EchoOther == nil || w.EchoOther.Node != "n2" || w.Hosts["n2"].Name != "host-netns-b" {
		t.Errorf("workloads: %+v", w)
	}
	var backends []string
	for _, b := range w.Services[NameEcho].Backends {
		backends = append(backends, b.Name)
	}
	if d := cmp.Diff([]string{"echo-other-node-1", "echo-same-node-1"}, backends); d != "" {
		t.Errorf("echo backends (-want +got):\n%s", d)
	}
}

func TestWaitReadyRejectsWrongPlacement(t *testing.T) {
	ctx := context.Background()
	p := DefaultParams()
	p.ReadyTimeout = 2 * time.Second
	ns := p.Namespace
	cs := fake.NewClientset()
	for _, pd := range []*corev1.Pod{
		readyPod(ns, "client-1", NameClient, "n1", "198.19.1.2"),
		readyPod(ns, "client2-1", NameClient2, "n1", "198.19.1.3"),
		readyPod(ns, "echo-same-node-1", NameEchoSameNode, "n1", "198.19.1.4"),
		readyPod(ns, "echo-other-node-1", NameEchoOtherNode, "n1", "198.19.1.5"),
		readyPod(ns, "host-netns-a", NameHostNetns, "n1", "198.18.0.11"),
	} {
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, pd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := WaitReady(ctx, cs, p, []Node{{Name: "n1"}}, true)
	if err == nil || !strings.Contains(err.Error(), "anti-affinity rule was not honoured") {
		t.Fatalf("WaitReady = %v, want the placement error", err)
	}
}
