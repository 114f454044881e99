package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"glia.dev/glia/internal/api"
)

// delFreedBound is how soon after its agent is back a pod deleted while
// the agent was down has its address free again: the agent's restore
// drops endpoints whose veth is gone; the rest is the agent pod's start.
// (A DEL lost while the agent runs but cannot be reached is the endpoint
// sweep's, every 30 s: TestSweepGone in internal/endpoint covers it.)
const delFreedBound = 90 * time.Second

// A pod deleted while its node's agent is stopped (the CNI DEL cannot
// reach the agent: the plugin removes the veth and returns) does not leak
// its address: once the agent is started again, the address is gone from
// the node's IPAM and the endpoint from `glia endpoint list`.
func TestDeleteWhileAgentDown(t *testing.T) {
	l := upLab(t, 1)
	const node, pod = "lab-node-1", "del-while-down"
	l.Kubectl("run", pod, "--image", "curlimages/curl:latest", "--overrides", `{"spec":{"nodeName":"`+node+`"}}`,
		"--command", "--", "sleep", "infinity")
	l.Kubectl("wait", "--for=condition=Ready", "pod/"+pod, "--timeout=120s")
	p, err := l.cs.CoreV1().Pods("default").Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := p.Status.PodIP
	if ip == "" {
		t.Fatalf("pod %s has no IP", pod)
	}
	// glia runs the CLI, failing softly: the agent may be starting.
	glia := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := run(ctx, l.glia(), args...)
		if err != nil {
			return "", fmt.Errorf("glia %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return out, nil
	}
	allocated := func() (bool, string, error) {
		var s api.Status
		out, err := glia("status", "--node", node, "-o", "json")
		if err != nil {
			return false, "", err
		}
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			return false, "", fmt.Errorf("glia status -o json: %w", err)
		}
		for _, a := range s.IPAM.Addresses {
			if strings.HasPrefix(a, ip+" ") {
				return true, a, nil
			}
		}
		return false, "", nil
	}
	hasEndpoint := func() (bool, error) {
		out, err := glia("endpoint", "list", "--node", node)
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[1] == ip {
				return true, err
			}
		}
		return false, err
	}
	if ok, _, err := allocated(); err != nil || !ok {
		t.Fatalf("before: %s not allocated on %s (%v)", ip, node, err)
	}
	if ok, err := hasEndpoint(); err != nil || !ok {
		t.Fatalf("before: no endpoint with %s on %s (%v)", ip, node, err)
	}

	l.Glia("lab", "agent", "stop", node)
	started := false
	defer func() {
		if !started {
			l.Glia("lab", "agent", "start", node)
		}
	}()
	l.Kubectl("delete", "pod", pod, "--wait=true", "--timeout=120s")

	started = true
	l.Glia("lab", "agent", "start", node)
	began := time.Now()
	eventually(t, delFreedBound, fmt.Sprintf("%s's address %s free again on %s", pod, ip, node), func() error {
		ok, owner, err := allocated()
		switch {
		case err != nil:
			return err
		case ok:
			return fmt.Errorf("still allocated: %s", owner)
		}
		if ok, err := hasEndpoint(); err != nil || ok {
			return fmt.Errorf("endpoint with %s still listed (%v)", ip, err)
		}
		return nil
	})
	t.Logf("%s free %s after the agent was started (bound %s)", ip, time.Since(began).Round(time.Second), delFreedBound)
}
