package noderunner

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// StoppedContainersAnnotation on a pod names containers (comma separated)
// the runner keeps stopped: it stops them if they run and does not restart
// them until the name leaves the list. It is the lab's own control (a
// kubelet has none): `glia lab agent stop|start` uses it to take a node's
// agent away and bring it back without deleting its pod.
const StoppedContainersAnnotation = "lab.glia.dev/stopped-containers"

// stoppedContainers returns the containers pod's annotation keeps stopped.
func stoppedContainers(pod *corev1.Pod) map[string]bool {
	v := pod.Annotations[StoppedContainersAnnotation]
	if v == "" {
		return nil
	}
	out := map[string]bool{}
	for _, n := range strings.Split(v, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out[n] = true
		}
	}
	return out
}

// FindContainerPID returns the PID of container's running process in pod
// namespace/name, from the runner's state under stateDir.
func FindContainerPID(stateDir, namespace, name, container string) (int, error) {
	st, err := FindPodState(stateDir, namespace, name)
	if err != nil {
		return 0, err
	}
	for _, c := range st.Containers {
		if c.Name == container && c.PID > 0 && processAlive(c.PID, c.StartTime) {
			return c.PID, nil
		}
	}
	return 0, fmt.Errorf("container %s of pod %s/%s is not running", container, namespace, name)
}

// FindPodState returns the runner's record of pod namespace/name under
// stateDir (its cgroup, namespace and container processes).
func FindPodState(stateDir, namespace, name string) (*PodState, error) {
	s, err := NewStore(podsDir(stateDir))
	if err != nil {
		return nil, err
	}
	states, err := s.Load()
	if err != nil && len(states) == 0 {
		return nil, err
	}
	for _, st := range states {
		if st.Namespace == namespace && st.Name == name {
			return st, nil
		}
	}
	return nil, fmt.Errorf("%w: %s/%s under %s", ErrPodNotFound, namespace, name, stateDir)
}
