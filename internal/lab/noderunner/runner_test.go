package noderunner

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func testPod(name, uid string, containers ...corev1.Container) *corev1.Pod {
	if len(containers) == 0 {
		containers = []corev1.Container{{Name: "web", Image: "zwindler/vhelloworld"}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(uid)},
		Spec: corev1.PodSpec{
			NodeName:   "n1",
			Containers: containers,
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodPending,
			Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}},
		},
	}
}

func kubernetesSvc() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "198.18.128.1",
			Ports:     []corev1.ServicePort{{Name: "https", Port: 443}},
		},
	}
}

func condStatus(p *corev1.Pod, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

func podReady(c kubernetes.Interface, name string) func() (bool, error) {
	return func() (bool, error) {
		p, err := c.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.Status.Phase == corev1.PodRunning && condStatus(p, corev1.PodReady) == corev1.ConditionTrue, nil
	}
}

func TestPodRunsAndBecomesReady(t *testing.T) {
	pod := testPod("web-1", "uid-web-1",
		corev1.Container{
			Name: "web", Image: "zwindler/vhelloworld:latest",
			Env: []corev1.EnvVar{
				{Name: "GREETING", Value: "hi"},
				{Name: "MY_POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "MY_NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
				{Name: "MISSING", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k", Optional: ptr.To(true)}}},
				{Name: "SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "k"}}},
				{Name: "URL", Value: "http://$(MY_POD_IP):$(KUBERNETES_SERVICE_PORT)/$(UNDEFINED)"},
			},
		})
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: "default"}, Data: map[string][]byte{"k": []byte("s3cret")}}
	client := fake.NewClientset(pod, kubernetesSvc(), secret)
	sb := newFakeSandbox()
	startRunner(t, client, sb, t.TempDir())

	eventually(t, "pod Running and Ready", podReady(client, "web-1"))
	got := getPod(t, client, "default", "web-1")

	if diff := cmp.Diff([]string{"prepare uid-web-1"}, sb.Calls()); diff != "" {
		t.Errorf("sandbox calls (-want +got):\n%s", diff)
	}
	if got.Status.PodIP != "198.19.1.10" || !cmp.Equal(got.Status.PodIPs, []corev1.PodIP{{IP: "198.19.1.10"}}) {
		t.Errorf("podIP = %q %v, want 198.19.1.10 from the CNI result", got.Status.PodIP, got.Status.PodIPs)
	}
	if got.Status.HostIP != "198.18.0.11" {
		t.Errorf("hostIP = %q", got.Status.HostIP)
	}
	for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		if s := condStatus(got, ct); s != corev1.ConditionTrue {
			t.Errorf("condition %s = %q, want True", ct, s)
		}
	}
	if len(got.Status.ContainerStatuses) != 1 {
		t.Fatalf("container statuses: %+v", got.Status.ContainerStatuses)
	}
	cs := got.Status.ContainerStatuses[0]
	if !cs.Ready || cs.Started == nil || !*cs.Started || cs.State.Running == nil || cs.RestartCount != 0 ||
		!strings.HasPrefix(cs.ContainerID, "glia-lab://") || cs.Image != "zwindler/vhelloworld:latest" || cs.ImageID == "" {
		t.Errorf("container status: %+v", cs)
	}

	procs := sb.podProcs("uid-web-1")
	if len(procs) != 1 {
		t.Fatalf("started %d processes, want 1", len(procs))
	}
	p := procs[0]
	wantArgv := []string{"/usr/local/bin/glia", "lab", "_image", "echo", "--port", "8081"}
	if diff := cmp.Diff(wantArgv, p.init.Argv); diff != "" {
		t.Errorf("program (-want +got):\n%s", diff)
	}
	if p.init.Hostname != "web-1" || p.init.ResolvConf == "" || p.init.Hosts == "" {
		t.Errorf("pod-init options: %+v", p.init)
	}
	rc, err := os.ReadFile(p.init.ResolvConf)
	if err != nil {
		t.Fatal(err)
	}
	if want := "nameserver 198.18.128.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"; string(rc) != want {
		t.Errorf("resolv.conf = %q, want %q", rc, want)
	}
	hosts, err := os.ReadFile(p.init.Hosts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(hosts), "198.19.1.10\tweb-1\n") {
		t.Errorf("hosts file lacks the pod entry:\n%s", hosts)
	}
	wantEnv := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=web-1",
		"GREETING=hi",
		"MY_POD_IP=198.19.1.10",
		"MY_NS=default",
		"SECRET=s3cret",
		"URL=http://198.19.1.10:443/$(UNDEFINED)",
		"KUBERNETES_PORT=tcp://198.18.128.1:443",
		"KUBERNETES_PORT_443_TCP=tcp://198.18.128.1:443",
		"KUBERNETES_PORT_443_TCP_ADDR=198.18.128.1",
		"KUBERNETES_PORT_443_TCP_PORT=443",
		"KUBERNETES_PORT_443_TCP_PROTO=tcp",
		"KUBERNETES_SERVICE_HOST=198.18.128.1",
		"KUBERNETES_SERVICE_PORT=443",
		"KUBERNETES_SERVICE_PORT_HTTPS=443",
	}
	if diff := cmp.Diff(wantEnv, p.env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

func TestGracefulDeletionTearsDownAndDeletesPod(t *testing.T) {
	pod := testPod("web-2", "uid-web-2")
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](30)
	client := fake.NewClientset(pod)
	sb := newFakeSandbox()
	sb.ignoreTE = true // the program ignores SIGTERM: the runner must SIGKILL
	stateDir := t.TempDir()
	startRunner(t, client, sb, stateDir)
	eventually(t, "pod Ready", podReady(client, "web-2"))

	// What the API server does on `kubectl delete pod`: set the deletion
	// timestamp and grace period, keep the object.
	cur := getPod(t, client, "default", "web-2")
	now := metav1.Now()
	cur.DeletionTimestamp = &now
	cur.DeletionGracePeriodSeconds = ptr.To[int64](30)
	if _, err := client.CoreV1().Pods("default").Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod object deleted", func() (bool, error) {
		_, err := client.CoreV1().Pods("default").Get(context.Background(), "web-2", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if diff := cmp.Diff([]string{"prepare uid-web-2", "teardown uid-web-2"}, sb.Calls()); diff != "" {
		t.Errorf("sandbox calls (-want +got):\n%s", diff)
	}
	p := sb.podProcs("uid-web-2")[0]
	p.mu.Lock()
	sigs := slices.Clone(p.signals)
	p.mu.Unlock()
	if len(sigs) < 2 || sigs[0] != syscall.SIGTERM || !slices.Contains(sigs, syscall.SIGKILL) {
		t.Errorf("signals = %v, want SIGTERM then SIGKILL", sigs)
	}
	if p.running() {
		t.Error("process still running after deletion")
	}
	if _, err := os.Stat(podsDir(stateDir) + "/uid-web-2.json"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod state still stored: %v", err)
	}
	// The delete must be the kubelet's: grace period 0.
	var sawDelete bool
	for _, a := range client.Actions() {
		if a.GetVerb() == "delete" && a.GetResource().Resource == "pods" {
			sawDelete = true
			opts := a.(interface{ GetDeleteOptions() metav1.DeleteOptions }).GetDeleteOptions()
			if opts.GracePeriodSeconds == nil || *opts.GracePeriodSeconds != 0 {
				t.Errorf("delete options %+v, want grace period 0", opts)
			}
		}
	}
	if !sawDelete {
		t.Error("runner did not delete the pod object")
	}
}

func TestForcedDeletionTearsDown(t *testing.T) {
	client := fake.NewClientset(testPod("web-3", "uid-web-3"))
	sb := newFakeSandbox()
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "pod Ready", podReady(client, "web-3"))
	if err := client.CoreV1().Pods("default").Delete(context.Background(), "web-3", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "sandbox torn down", func() (bool, error) {
		return slices.Contains(sb.Calls(), "teardown uid-web-3"), nil
	})
	if p := sb.podProcs("uid-web-3")[0]; p.running() {
		t.Error("process still running")
	}
}

func TestContainerRestartIncrementsRestartCount(t *testing.T) {
	client := fake.NewClientset(testPod("web-4", "uid-web-4"))
	sb := newFakeSandbox()
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "pod Ready", podReady(client, "web-4"))
	sb.podProcs("uid-web-4")[0].exit(3)
	eventually(t, "container restarted", func() (bool, error) {
		p := getPod(t, client, "default", "web-4")
		if len(p.Status.ContainerStatuses) != 1 {
			return false, nil
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount == 1 && cs.State.Running != nil && cs.Ready, nil
	})
	p := getPod(t, client, "default", "web-4")
	last := p.Status.ContainerStatuses[0].LastTerminationState.Terminated
	if last == nil || last.ExitCode != 3 || last.Reason != "Error" {
		t.Errorf("last termination = %+v, want exit code 3", last)
	}
	if n := len(sb.podProcs("uid-web-4")); n != 2 {
		t.Errorf("%d processes started, want 2", n)
	}
	if slices.Contains(sb.Calls(), "teardown uid-web-4") {
		t.Error("sandbox torn down on a container restart")
	}
}

func TestRestartNeverPodSucceedsAndReleasesSandbox(t *testing.T) {
	pod := testPod("job-1", "uid-job-1", corev1.Container{Name: "curl", Image: "curlimages/curl", Args: []string{"-s", "http://198.18.128.20"}})
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	client := fake.NewClientset(pod)
	sb := newFakeSandbox()
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "process started", func() (bool, error) { return len(sb.podProcs("uid-job-1")) == 1, nil })
	p := sb.podProcs("uid-job-1")[0]
	if diff := cmp.Diff([]string{"curl", "-s", "http://198.18.128.20"}, p.init.Argv); diff != "" {
		t.Errorf("program (-want +got):\n%s", diff)
	}
	p.exit(0)
	eventually(t, "pod Succeeded", func() (bool, error) {
		return getPod(t, client, "default", "job-1").Status.Phase == corev1.PodSucceeded, nil
	})
	eventually(t, "sandbox released", func() (bool, error) {
		return slices.Contains(sb.Calls(), "teardown uid-job-1"), nil
	})
	got := getPod(t, client, "default", "job-1")
	term := got.Status.ContainerStatuses[0].State.Terminated
	if term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
		t.Errorf("container state = %+v, want terminated Completed", got.Status.ContainerStatuses[0].State)
	}
	if n := len(sb.podProcs("uid-job-1")); n != 1 {
		t.Errorf("restartPolicy Never restarted the container: %d processes", n)
	}
}

func TestImageNotInCatalog(t *testing.T) {
	client := fake.NewClientset(testPod("nginx", "uid-nginx", corev1.Container{Name: "nginx", Image: "nginx:1.27"}))
	sb := newFakeSandbox()
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "ErrImagePull status", func() (bool, error) {
		p := getPod(t, client, "default", "nginx")
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return false, nil
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		return w.Reason == "ErrImagePull" && strings.Contains(w.Message, "catalog"), nil
	})
	if p := getPod(t, client, "default", "nginx"); p.Status.Phase != corev1.PodPending {
		t.Errorf("phase = %s, want Pending", p.Status.Phase)
	}
	if len(sb.Calls()) != 0 {
		t.Errorf("sandbox was touched for an image that cannot run: %v", sb.Calls())
	}
}

func TestHostNetworkPod(t *testing.T) {
	pod := testPod("hostnet", "uid-hostnet", corev1.Container{Name: "c", Image: "busybox"})
	pod.Spec.HostNetwork = true
	client := fake.NewClientset(pod)
	sb := newFakeSandbox()
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "pod Ready", podReady(client, "hostnet"))
	got := getPod(t, client, "default", "hostnet")
	if got.Status.PodIP != "198.18.0.11" {
		t.Errorf("podIP = %q, want the node IP", got.Status.PodIP)
	}
	p := sb.podProcs("uid-hostnet")[0]
	if p.init.Hostname != "n1" || p.init.ResolvConf != "" || p.init.Hosts != "" {
		t.Errorf("host-network pod-init options: %+v", p.init)
	}
	if diff := cmp.Diff([]string{"/usr/local/bin/glia", "lab", "_image", "sleep"}, p.init.Argv); diff != "" {
		t.Errorf("program (-want +got):\n%s", diff)
	}
}

func TestRunnerRestartReadoptsPods(t *testing.T) {
	client := fake.NewClientset(testPod("web-5", "uid-web-5"))
	sb := newFakeSandbox()
	stateDir := t.TempDir()
	tr := startRunner(t, client, sb, stateDir)
	eventually(t, "pod Ready", podReady(client, "web-5"))
	tr.stop()
	procs := sb.podProcs("uid-web-5")
	if len(procs) != 1 || !procs[0].running() {
		t.Fatalf("stopping the runner disturbed the pod: %d processes", len(procs))
	}

	startRunner(t, client, sb, stateDir)
	eventually(t, "process adopted", func() (bool, error) {
		return slices.Contains(sb.Calls(), "adopt uid-web-5 web"), nil
	})
	if diff := cmp.Diff([]string{"prepare uid-web-5", "check uid-web-5", "adopt uid-web-5 web"}, sb.Calls()); diff != "" {
		t.Errorf("sandbox calls (-want +got):\n%s", diff)
	}
	if n := len(sb.podProcs("uid-web-5")); n != 1 {
		t.Errorf("restarted runner started %d processes, want the 1 adopted", n)
	}
	// The adopted process is supervised: when it dies, it is restarted.
	procs[0].exit(1)
	eventually(t, "adopted container restarted", func() (bool, error) {
		p := getPod(t, client, "default", "web-5")
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount == 1 &&
			p.Status.ContainerStatuses[0].State.Running != nil, nil
	})
}

func TestRunnerRestartTearsDownVanishedPods(t *testing.T) {
	client := fake.NewClientset(testPod("web-6", "uid-web-6"))
	sb := newFakeSandbox()
	stateDir := t.TempDir()
	tr := startRunner(t, client, sb, stateDir)
	eventually(t, "pod Ready", podReady(client, "web-6"))
	tr.stop()
	// Deleted while no runner was watching.
	if err := client.CoreV1().Pods("default").Delete(context.Background(), "web-6", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	startRunner(t, client, sb, stateDir)
	eventually(t, "vanished pod torn down", func() (bool, error) {
		return slices.Contains(sb.Calls(), "teardown uid-web-6"), nil
	})
	if p := sb.podProcs("uid-web-6")[0]; p.running() {
		t.Error("process of vanished pod still running")
	}
	eventually(t, "state forgotten", func() (bool, error) {
		_, err := os.Stat(podsDir(stateDir) + "/uid-web-6.json")
		return errors.Is(err, os.ErrNotExist), nil
	})
}

func TestSandboxFailureIsReportedAndRetried(t *testing.T) {
	client := fake.NewClientset(testPod("web-7", "uid-web-7"))
	sb := newFakeSandbox()
	sb.prepErr = errors.New("plugin type=\"glia-cni\" failed (add): agent socket not found")
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "sandbox error in status", func() (bool, error) {
		p := getPod(t, client, "default", "web-7")
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return false, nil
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		return w.Reason == "ContainerCreating" && strings.Contains(w.Message, "agent socket not found"), nil
	})
	sb.mu.Lock()
	sb.prepErr = nil
	sb.mu.Unlock()
	eventually(t, "pod Ready after retry", podReady(client, "web-7"))
}

func TestInitContainersRunFirst(t *testing.T) {
	pod := testPod("init-1", "uid-init-1")
	pod.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "busybox", Command: []string{"true"}}}
	client := fake.NewClientset(pod)
	sb := newFakeSandbox()
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "init container started", func() (bool, error) { return len(sb.podProcs("uid-init-1")) == 1, nil })
	p := getPod(t, client, "default", "init-1")
	if condStatus(p, corev1.PodInitialized) == corev1.ConditionTrue || p.Status.Phase != corev1.PodPending {
		t.Errorf("pod initialized before its init container ended: %s %v", p.Status.Phase, p.Status.Conditions)
	}
	if got := sb.podProcs("uid-init-1")[0].init.Argv; !cmp.Equal(got, []string{"true"}) {
		t.Errorf("first process = %v, want the init container", got)
	}
	sb.podProcs("uid-init-1")[0].exit(0)
	eventually(t, "pod Ready", podReady(client, "init-1"))
	got := getPod(t, client, "default", "init-1")
	if len(got.Status.InitContainerStatuses) != 1 || got.Status.InitContainerStatuses[0].State.Terminated == nil {
		t.Errorf("init container status: %+v", got.Status.InitContainerStatuses)
	}
}
