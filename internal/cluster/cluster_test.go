package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeExec answers per pod: stdout, stderr and error, or hangs until the
// context ends.
type fakeExec struct {
	mu      sync.Mutex
	answers map[string]fakeAnswer
	calls   []string // "pod container cmd..."
}

type fakeAnswer struct {
	stdout, stderr string
	err            error
	hang           bool
}

func (f *fakeExec) Exec(ctx context.Context, ns, pod, container string, cmd []string) ([]byte, []byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, ns+"/"+pod+" "+container+" "+strings.Join(cmd, " "))
	a, ok := f.answers[pod]
	f.mu.Unlock()
	if !ok {
		return nil, nil, errors.New("unexpected pod " + pod)
	}
	if a.hang {
		<-ctx.Done()
		return nil, nil, ctx.Err()
	}
	return []byte(a.stdout), []byte(a.stderr), a.err
}

const ns = "glia-system"

func node(name string) runtime.Object {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func daemonSet(name string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: "ds-uid-" + "glia"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": name}}}}
}

func pod(name, nodeName, owner string, phase corev1.PodPhase, state corev1.ContainerState, created time.Time) runtime.Object {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "glia"},
			CreationTimestamp: metav1.NewTime(created),
			OwnerReferences:   []metav1.OwnerReference{{Kind: "DaemonSet", Name: owner, UID: "ds-uid-glia"}}},
		Spec: corev1.PodSpec{NodeName: nodeName},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{
			{Name: DefaultContainer, State: state}}},
	}
}

var running = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}

func TestRun(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cs := fake.NewClientset(
		node("node-a"), node("node-b"), node("node-c"), node("node-d"), node("node-e"), node("node-f"),
		daemonSet("glia"),
		pod("glia-a", "node-a", "glia", corev1.PodRunning, running, t0),
		pod("glia-b", "node-b", "glia", corev1.PodRunning, running, t0),
		pod("glia-c", "node-c", "glia", corev1.PodPending, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}, t0),
		// node-d has no agent pod; another DaemonSet's pod there does not count
		pod("other-d", "node-d", "other", corev1.PodRunning, running, t0),
		pod("glia-e", "node-e", "glia", corev1.PodRunning, running, t0),
		// a rollout on node-f: the new pod runs, the old one terminates
		pod("glia-f-old", "node-f", "glia", corev1.PodRunning, running, t0),
		pod("glia-f-new", "node-f", "glia", corev1.PodRunning, running, t0.Add(time.Minute)),
	)
	ex := &fakeExec{answers: map[string]fakeAnswer{
		"glia-a":     {stdout: `{"nodeName":"node-a"}`},
		"glia-b":     {stderr: "Error: glia-agent at /var/run/glia/glia.sock: glia agent is unreachable\n", err: errors.New("command terminated with exit code 1")},
		"glia-e":     {hang: true},
		"glia-f-new": {stdout: `not json`},
	}}
	c := New(cs, ex, Options{Timeout: 200 * time.Millisecond})
	type st struct {
		NodeName string `json:"nodeName"`
	}
	got, err := RunJSON[st](context.Background(), c, []string{"glia", "status", "-o", "json"})
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Node, Pod, Value, Err string }
	var rows []row
	for _, r := range got {
		e := ""
		if r.Err != nil {
			e = r.Err.Error()
		}
		rows = append(rows, row{r.Node, r.Pod, r.Value.NodeName, e})
	}
	want := []row{
		{"node-a", "glia-a", "node-a", ""},
		{"node-b", "glia-b", "", "pod glia-b: glia status -o json: command terminated with exit code 1: Error: glia-agent at /var/run/glia/glia.sock: glia agent is unreachable"},
		{"node-c", "glia-c", "", "pod glia-c is Pending (container glia-agent waiting: CrashLoopBackOff)"},
		{"node-d", "", "", "no pod of DaemonSet glia-system/glia on the node"},
		{"node-e", "glia-e", "", "no answer from pod glia-e within 200ms"},
		{"node-f", "glia-f-new", "", "pod glia-f-new: glia status -o json: the answer is not JSON: invalid character 'o' in literal null (expecting 'u')"},
	}
	if d := cmp.Diff(want, rows); d != "" {
		t.Errorf("answers (-want +got):\n%s", d)
	}
	for _, call := range ex.calls {
		if !strings.HasPrefix(call, "glia-system/glia-") || !strings.Contains(call, " glia-agent glia status -o json") {
			t.Errorf("exec call %q: want the agent container of a glia pod in glia-system", call)
		}
	}
	if len(ex.calls) != 4 {
		t.Errorf("%d execs (%v), want 4: pods that cannot answer are not asked", len(ex.calls), ex.calls)
	}
}

func TestRunNoDaemonSet(t *testing.T) {
	c := New(fake.NewClientset(node("node-a")), &fakeExec{}, Options{Namespace: "kube-system"})
	_, err := c.Run(context.Background(), []string{"glia", "version"})
	if err == nil || !strings.Contains(err.Error(), "no DaemonSet kube-system/glia") || !strings.Contains(err.Error(), "-n NAMESPACE") {
		t.Fatalf("err = %v, want one naming the DaemonSet kube-system/glia and -n", err)
	}
}

func TestFindKubeconfig(t *testing.T) {
	dir := t.TempDir()
	labKC := filepath.Join(dir, "lab-kubeconfig")
	if err := os.WriteFile(labKC, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir() // a home without .kube/config
	withKube := t.TempDir()
	if err := os.MkdirAll(filepath.Join(withKube, ".kube"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withKube, ".kube", "config"), []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, flag, env, lab, home string
		want                       string
		wantErr                    error
	}{
		{name: "flag wins", flag: "/x/kc", env: "/y/kc", lab: labKC, want: "/x/kc"},
		{name: "then KUBECONFIG", env: "/y/kc" + string(filepath.ListSeparator) + labKC, lab: labKC, want: "/y/kc" + string(filepath.ListSeparator) + labKC},
		{name: "KUBECONFIG names no file", env: "/y/kc", lab: labKC, wantErr: ErrNoKubeconfig},
		{name: "then the lab's", lab: labKC, want: labKC + " (the lab's)"},
		{name: "no lab up, no home kubeconfig", lab: filepath.Join(dir, "absent"), wantErr: ErrNoKubeconfig},
		{name: "no lab up: ~/.kube/config", lab: filepath.Join(dir, "absent"), home: withKube, want: filepath.Join(withKube, ".kube", "config")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tt.env)
			home := tt.home
			if home == "" {
				home = empty
			}
			t.Setenv("HOME", home)
			_, got, err := FindKubeconfig(Options{Kubeconfig: tt.flag, LabKubeconfig: tt.lab})
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
