package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/k8s"
)

// apiMaxSilence is how long the API server may go without answering
// before the agent stops counting as ready (the heartbeat asks every
// apiHeartbeat).
const (
	apiHeartbeat  = 15 * time.Second
	apiMaxSilence = 4 * apiHeartbeat
)

// Readiness check names, in the order they are listed.
const (
	CheckEndpointsRestored = "endpoints-restored"
	CheckDatapath          = "datapath"
	CheckKubernetes        = "kubernetes"
	CheckReconcilers       = "reconcilers"
)

// readiness is the agent's readiness: endpoints restored, the datapath
// initialised and programmed once, the watches synced and the API server
// answering, no reconciler in error. /readyz, `glia status` and the
// agent-not-ready taint all read it.
func (a *Agent) readiness() []api.ReadinessCheck {
	checks := []api.ReadinessCheck{
		readinessCheck(CheckEndpointsRestored, a.restoredErr()),
		readinessCheck(CheckDatapath, a.datapathErr()),
		readinessCheck(CheckKubernetes, a.apiHealth.Check(apiMaxSilence)),
		readinessCheck(CheckReconcilers, a.reconcilersErr()),
	}
	return checks
}

func readinessCheck(name string, err error) api.ReadinessCheck {
	if err != nil {
		return api.ReadinessCheck{Name: name, Message: err.Error()}
	}
	return api.ReadinessCheck{Name: name, OK: true}
}

// ready says whether every check passes.
func ready(checks []api.ReadinessCheck) bool {
	for _, c := range checks {
		if !c.OK {
			return false
		}
	}
	return true
}

func (a *Agent) restoredErr() error {
	if !a.restored.Load() {
		return fmt.Errorf("endpoints are being restored from %s", a.cfg.StateDir)
	}
	return nil
}

func (a *Agent) datapathErr() error {
	switch {
	case !a.initialised.Load():
		return errors.New("the datapath is not initialised yet")
	case !a.programmed.Load():
		return errors.New("the datapath has not been programmed from the cluster's state yet")
	}
	return nil
}

// reconcilersErr names every reconciler with objects in error, and them.
func (a *Agent) reconcilersErr() error {
	var failing []string
	for _, r := range a.reconcilerStatus() {
		if r.Errors > 0 {
			failing = append(failing, fmt.Sprintf("%s (%d in error: %s)", r.Name, r.Errors, strings.Join(r.Failing, "; ")))
		}
	}
	if len(failing) > 0 {
		return fmt.Errorf("in error: %s", strings.Join(failing, "; "))
	}
	return nil
}

// kubernetesStatus is the status line of the API connection, as observed.
func (a *Agent) kubernetesStatus() api.KubernetesStatus {
	s := a.apiHealth.State()
	ks := api.KubernetesStatus{Version: s.Version, LastSuccess: s.LastSuccess, LastError: s.LastError, State: "Ok"}
	if err := a.apiHealth.Check(apiMaxSilence); err != nil {
		ks.State = "Error: " + err.Error()
	}
	return ks
}

// untaintPeriod is how often the agent looks at its Node for the
// agent-not-ready taint (in its informer cache: no API call) while ready.
const untaintPeriod = 5 * time.Second

// removeNotReadyTaint removes the agent-not-ready taint from the agent's
// Node whenever the agent is ready and the Node carries it: once after
// start, and again if something puts it back. A failed patch is retried
// with back-off.
func (a *Agent) removeNotReadyTaint(ctx context.Context, hasTaint func() bool) {
	backoff := time.Second
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := untaintPeriod
		if ready(a.readiness()) && hasTaint() {
			removed, err := k8s.RemoveTaint(ctx, a.clients.Kube, a.node.Name, k8s.TaintAgentNotReady)
			switch {
			case err != nil:
				a.log.Warn("Removing the agent-not-ready taint failed; retrying", "taint", k8s.TaintAgentNotReady, "retryIn", backoff, "error", err)
				next, backoff = backoff, min(2*backoff, time.Minute)
			case removed:
				a.log.Info("Agent ready: removed the agent-not-ready taint from the node", "taint", k8s.TaintAgentNotReady)
				backoff = time.Second
			}
		}
		t.Reset(next)
	}
}
