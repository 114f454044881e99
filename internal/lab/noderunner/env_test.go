package noderunner

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"glia.dev/glia/internal/lab/podinit"
)

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"NODE_NAME": "lab-node-1", "EMPTY": "", "A": "$(B)"}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	tests := []struct{ in, want string }{
		{"--node-name=$(NODE_NAME)", "--node-name=lab-node-1"},
		{"$(NODE_NAME)$(NODE_NAME)", "lab-node-1lab-node-1"},
		{"$(UNDEFINED)", "$(UNDEFINED)"},
		{"$(EMPTY)x", "x"},
		{"$$(NODE_NAME)", "$(NODE_NAME)"},
		{"$$$(NODE_NAME)", "$lab-node-1"},
		{"$$", "$"},
		{"cost: $5", "cost: $5"},
		{"trailing $", "trailing $"},
		{"$(unclosed", "$(unclosed"},
		{"$()", "$()"},
		{"$(A)", "$(B)"}, // no recursion
		{"", ""},
	}
	for _, tt := range tests {
		if got := expandVars(tt.in, lookup); got != tt.want {
			t.Errorf("expandVars(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPodFieldValue(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "glia-x7", Namespace: "glia-system", UID: "u-1",
			Labels: map[string]string{"app": "glia", "tier": "node"}, Annotations: map[string]string{"note": `say "hi"`}},
		Spec: corev1.PodSpec{NodeName: "lab-node-1", ServiceAccountName: "glia"},
	}
	ips := []string{"198.19.1.5", "fd00::5"}
	tests := []struct {
		path   string
		volume bool
		want   string
		err    bool
	}{
		{"metadata.name", false, "glia-x7", false},
		{"metadata.namespace", false, "glia-system", false},
		{"metadata.uid", false, "u-1", false},
		{"metadata.labels['app']", false, "glia", false},
		{"metadata.labels['missing']", false, "", false},
		{"metadata.annotations['note']", true, `say "hi"`, false},
		{"spec.nodeName", false, "lab-node-1", false},
		{"spec.serviceAccountName", false, "glia", false},
		{"status.podIP", false, "198.19.1.5", false},
		{"status.podIPs", false, "198.19.1.5,fd00::5", false},
		{"status.hostIP", false, "198.18.0.11", false},
		{"status.hostIPs", false, "198.18.0.11", false},
		{"metadata.labels", true, "app=\"glia\"\ntier=\"node\"", false},
		{"metadata.annotations", true, `note="say \"hi\""`, false},
		{"metadata.labels", false, "", true},
		{"spec.nodeName", true, "", true},
		{"spec.containers", false, "", true},
	}
	for _, tt := range tests {
		got, err := podFieldValue(pod, tt.path, ips, "198.18.0.11", tt.volume)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("podFieldValue(%s, volume=%t) = %q, %v; want %q, err=%t", tt.path, tt.volume, got, err, tt.want, tt.err)
		}
	}
}

func TestResourceFieldValue(t *testing.T) {
	c := corev1.Container{Name: "app", Resources: corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
	}}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
	tests := []struct {
		res, divisor, container string
		want                    string
		err                     bool
	}{
		{"limits.cpu", "", "", "2", false},      // 1.5 cores rounded up
		{"limits.cpu", "1m", "", "1500", false}, // millicores
		{"requests.cpu", "1m", "", "250", false},
		{"limits.memory", "1Mi", "", "64", false},
		{"limits.memory", "", "", "67108864", false},
		{"requests.memory", "", "", "0", false},
		{"limits.ephemeral-storage", "1Gi", "", "20", false}, // unset: the node's allocatable
		{"limits.cpu", "", "app", "2", false},
		{"limits.cpu", "", "other", "", true},
		{"spec.cpu", "", "", "", true},
	}
	for _, tt := range tests {
		ref := &corev1.ResourceFieldSelector{Resource: tt.res, ContainerName: tt.container}
		if tt.divisor != "" {
			ref.Divisor = resource.MustParse(tt.divisor)
		}
		got, err := resourceFieldValue(pod, &pod.Spec.Containers[0], ref)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("resourceFieldValue(%s / %s, %q) = %q, %v; want %q, err=%t", tt.res, tt.divisor, tt.container, got, err, tt.want, tt.err)
		}
	}
}

func TestContainerEnv(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "glia-system"},
		Data: map[string]string{"debug": "true", "bad=key": "x", "mode": "native"}}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "glia-system"}, Data: map[string][]byte{"token": []byte("t0k")}}
	web := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-svc", Namespace: "glia-system"},
		Spec: corev1.ServiceSpec{ClusterIP: "198.18.128.20", Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: "glia-system"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 80}}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "glia-x7", Namespace: "glia-system"},
		Spec: corev1.PodSpec{NodeName: "lab-node-1", HostNetwork: true}}
	client := fake.NewClientset(cm, sec, web, headless, kubernetesSvc())
	r := &runner{client: client, cfg: Config{Node: "lab-node-1", NodeIP: "198.18.0.11"}}

	c := &corev1.Container{
		Name:    "agent",
		EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "GLIA_"}},
		Env: []corev1.EnvVar{
			{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "KUBERNETES_SERVICE_HOST", Value: "198.18.0.1"},
			{Name: "KUBERNETES_SERVICE_PORT", Value: "6443"},
			{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "token"}}},
			{Name: "ARGS", Value: "--node-name=$(NODE_NAME) --mode=$(GLIA_mode) --web=$(WEB_SVC_SERVICE_HOST)"},
			{Name: "PATH", Value: "/opt/bin:/usr/bin"},
		},
	}
	env, err := r.containerEnv(context.Background(), pod, c, []string{"198.18.0.11"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	want := map[string]string{
		"PATH": "/opt/bin:/usr/bin", "HOSTNAME": "lab-node-1",
		"GLIA_debug": "true", "GLIA_mode": "native", "NODE_NAME": "lab-node-1",
		// Explicit env overrides the kubernetes Service's variables.
		"KUBERNETES_SERVICE_HOST": "198.18.0.1", "KUBERNETES_SERVICE_PORT": "6443",
		"TOKEN": "t0k", "ARGS": "--node-name=lab-node-1 --mode=native --web=198.18.128.20",
		"KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": "tcp://198.18.128.1:443",
		"KUBERNETES_PORT_443_TCP": "tcp://198.18.128.1:443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
		"KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "198.18.128.1",
		"WEB_SVC_SERVICE_HOST": "198.18.128.20", "WEB_SVC_SERVICE_PORT": "80", "WEB_SVC_SERVICE_PORT_HTTP": "80",
		"WEB_SVC_PORT": "tcp://198.18.128.20:80", "WEB_SVC_PORT_80_TCP": "tcp://198.18.128.20:80",
		"WEB_SVC_PORT_80_TCP_PROTO": "tcp", "WEB_SVC_PORT_80_TCP_PORT": "80", "WEB_SVC_PORT_80_TCP_ADDR": "198.18.128.20",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if len(env) != len(got) {
		t.Errorf("env has duplicates: %q", env)
	}
	if cmd := expandCommand([]string{"glia-agent", "--node-name=$(NODE_NAME)", "$$(NODE_NAME)"}, env); !cmp.Equal(cmd, []string{"glia-agent", "--node-name=lab-node-1", "$(NODE_NAME)"}) {
		t.Errorf("expanded command %q", cmd)
	}

	// Without service links only the kubernetes Service's variables come.
	pod.Spec.EnableServiceLinks = ptr.To(false)
	env, err = r.containerEnv(context.Background(), pod, &corev1.Container{Name: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(env, " "); strings.Contains(s, "WEB_SVC") || !strings.Contains(s, "KUBERNETES_SERVICE_HOST=198.18.128.1") {
		t.Errorf("enableServiceLinks=false env: %s", s)
	}

	errTests := []struct {
		name string
		env  corev1.EnvVar
		from []corev1.EnvFromSource
		want string
	}{
		{"missing configmap", corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}}, nil, `configmap "nope" not found`},
		{"missing key", corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "k"}}}, nil, "couldn't find key k in ConfigMap glia-system/cfg"},
		{"missing secret key", corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "k"}}}, nil, "couldn't find key k in Secret glia-system/sec"},
		{"missing envFrom secret", corev1.EnvVar{Name: "X"}, []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}}}}, `secret "gone" not found`},
		{"bad fieldRef", corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.volumes"}}}, nil, `fieldRef "spec.volumes" is not supported`},
	}
	for _, tt := range errTests {
		_, err := r.containerEnv(context.Background(), pod, &corev1.Container{Name: "x", Env: []corev1.EnvVar{tt.env}, EnvFrom: tt.from}, nil)
		var ee envError
		if err == nil || !errors.As(err, &ee) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want an envError containing %q", tt.name, err, tt.want)
		}
	}
	// Optional references that are missing skip the variable.
	env, err = r.containerEnv(context.Background(), pod, &corev1.Container{Name: "x",
		EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "gone"}, Optional: ptr.To(true)}}},
		Env:     []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "k", Optional: ptr.To(true)}}}},
	}, nil)
	if err != nil || strings.Contains(strings.Join(env, " "), "X=") {
		t.Errorf("optional references: %q, %v", env, err)
	}
}

func TestRunAs(t *testing.T) {
	i := func(v int) *int { return &v }
	tests := []struct {
		name     string
		psc      *corev1.PodSecurityContext
		sc       *corev1.SecurityContext
		uid, gid *int
		groups   []int
		err      string
	}{
		{name: "root by default"},
		{name: "pod user and groups", psc: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000), SupplementalGroups: []int64{5}, FSGroup: ptr.To[int64](7)},
			uid: i(1000), gid: i(0), groups: []int{5, 7}},
		{name: "container wins", psc: &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](1000)},
			sc: &corev1.SecurityContext{RunAsUser: ptr.To[int64](2000)}, uid: i(2000), gid: i(1000)},
		{name: "runAsNonRoot without a user", psc: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}, err: "runAsNonRoot and image will run as root"},
		{name: "runAsNonRoot with user 0", sc: &corev1.SecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](0)}, err: "breaks non-root policy"},
		{name: "runAsNonRoot with a user", sc: &corev1.SecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65534)}, uid: i(65534), gid: i(0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: corev1.PodSpec{SecurityContext: tt.psc}}
			var o podinit.Options
			err := runAs(&o, pod, &corev1.Container{Name: "c", SecurityContext: tt.sc})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("runAs = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]any{tt.uid, tt.gid, tt.groups}, []any{o.UID, o.GID, o.Groups}); diff != "" {
				t.Errorf("uid, gid, groups (-want +got):\n%s", diff)
			}
		})
	}
}
