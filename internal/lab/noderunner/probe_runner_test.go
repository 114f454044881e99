package noderunner

import (
	"errors"
	"slices"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func execProbe(cmd string, failures int32) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{cmd}}},
		PeriodSeconds: 1, FailureThreshold: failures}
}

func TestLivenessFailureRestartsContainer(t *testing.T) {
	pod := testPod("live-1", "uid-live-1", corev1.Container{Name: "web", Image: "glia/echo", LivenessProbe: execProbe("alive", 2)})
	client := fake.NewClientset(pod, kubernetesSvc())
	sb := newFakeSandbox()
	var mu sync.Mutex
	healthy := true
	sb.setExec(func(int, []string) error {
		mu.Lock()
		defer mu.Unlock()
		if healthy {
			return nil
		}
		return errors.New("exit 1")
	})
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "pod Ready", podReady(client, "live-1"))

	mu.Lock()
	healthy = false
	mu.Unlock()
	eventually(t, "a restart after the liveness probe failed", func() (bool, error) {
		p := getPod(t, client, "default", "live-1")
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1, nil
	})
	first := sb.podProcs("uid-live-1")[0]
	first.mu.Lock()
	sigs := slices.Clone(first.signals)
	first.mu.Unlock()
	if !slices.Contains(sigs, 15) {
		t.Errorf("the failing container got %v, want SIGTERM", sigs)
	}
	mu.Lock()
	healthy = true
	mu.Unlock()
	eventually(t, "pod Ready again", podReady(client, "live-1"))
	cs := getPod(t, client, "default", "live-1").Status.ContainerStatuses[0]
	if cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 128+15 {
		t.Errorf("last termination %+v, want the SIGTERM exit", cs.LastTerminationState)
	}
}

func TestStartupProbeGatesLivenessAndReadiness(t *testing.T) {
	c := corev1.Container{Name: "web", Image: "glia/echo",
		StartupProbe:   execProbe("started", 1000),
		LivenessProbe:  execProbe("alive", 1),
		ReadinessProbe: execProbe("ready", 1)}
	pod := testPod("start-1", "uid-start-1", c)
	client := fake.NewClientset(pod, kubernetesSvc())
	sb := newFakeSandbox()
	var mu sync.Mutex
	started := false
	var probed []string
	sb.setExec(func(_ int, argv []string) error {
		mu.Lock()
		defer mu.Unlock()
		probed = append(probed, argv[0])
		if argv[0] == "started" && !started {
			return errors.New("not yet")
		}
		return nil
	})
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "two startup probes", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(probed) >= 2, nil
	})
	p := getPod(t, client, "default", "start-1")
	if cs := p.Status.ContainerStatuses; len(cs) != 1 || cs[0].State.Running == nil || *cs[0].Started || cs[0].Ready {
		t.Errorf("before the startup probe passed: %+v", cs)
	}
	mu.Lock()
	for _, name := range probed {
		if name != "started" {
			t.Errorf("%s probe ran before the startup probe passed", name)
		}
	}
	started = true
	mu.Unlock()
	eventually(t, "pod Ready", podReady(client, "start-1"))
	cs := getPod(t, client, "default", "start-1").Status.ContainerStatuses[0]
	if !*cs.Started || cs.RestartCount != 0 {
		t.Errorf("after the startup probe passed: %+v", cs)
	}
}

func TestStartupProbeFailureRestarts(t *testing.T) {
	pod := testPod("start-2", "uid-start-2", corev1.Container{Name: "web", Image: "glia/echo", StartupProbe: execProbe("started", 2)})
	client := fake.NewClientset(pod, kubernetesSvc())
	sb := newFakeSandbox()
	startRunner(t, client, sb, t.TempDir())
	eventually(t, "a restart after the startup probe failed", func() (bool, error) {
		p := getPod(t, client, "default", "start-2")
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1, nil
	})
}
