package noderunner

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// waitingState returns the first container's waiting reason and message.
func waitingState(t *testing.T, c *fake.Clientset, name string) (string, string) {
	t.Helper()
	p := getPod(t, c, "default", name)
	if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
		return "", ""
	}
	w := p.Status.ContainerStatuses[0].State.Waiting
	return w.Reason, w.Message
}

func TestMissingVolumeSourceBlocksThePodUntilItExists(t *testing.T) {
	pod := testPod("vol-1", "uid-vol-1", corev1.Container{Name: "web", Image: "glia/echo",
		VolumeMounts: []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app"}}})
	pod.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}}}
	client := fake.NewClientset(pod, kubernetesSvc())
	sb := newFakeSandbox()
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "ContainerCreating naming the volume", func() (bool, error) {
		reason, msg := waitingState(t, client, "vol-1")
		return reason == "ContainerCreating" && strings.Contains(msg, `MountVolume.SetUp failed for volume "cfg": configmap "app-config" not found`), nil
	})
	if calls := sb.Calls(); len(calls) != 0 {
		t.Errorf("sandbox created before the volumes could be set up: %v", calls)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app-config", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if _, err := client.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod Ready once the ConfigMap exists", podReady(client, "vol-1"))
	procs := sb.podProcs("uid-vol-1")
	var mount string
	for _, m := range procs[0].init.Mounts {
		if m.Target == "/etc/app" {
			mount = m.Source
			if !m.ReadOnly {
				t.Errorf("configMap volume mounted read-write")
			}
		}
	}
	if !strings.HasSuffix(mount, "volumes/kubernetes.io~configmap/cfg") {
		t.Errorf("container mounts %+v, want the configMap volume at /etc/app", procs[0].init.Mounts)
	}
}

func TestEnvReferenceErrorIsCreateContainerConfigError(t *testing.T) {
	pod := testPod("env-1", "uid-env-1", corev1.Container{Name: "web", Image: "glia/echo",
		Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}}}})
	client := fake.NewClientset(pod, kubernetesSvc())
	startRunner(t, client, newFakeSandbox(), t.TempDir())
	eventually(t, "CreateContainerConfigError", func() (bool, error) {
		reason, msg := waitingState(t, client, "env-1")
		return reason == "CreateContainerConfigError" && strings.Contains(msg, `configmap "nope" not found`), nil
	})
}
