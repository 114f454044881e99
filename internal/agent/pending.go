package agent

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/tools/cache"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/k8s"
	"glia.dev/glia/internal/status"
)

// pendingConfig is what the agent's config sources say now that differs
// from the config it started on (it applies config only at start).
type pendingConfig struct {
	mu  sync.Mutex
	cur *api.ConfigPending
	// said: the first pending set (even none) has been published, so a
	// condition left by the agent's previous run is replaced.
	said bool
}

// get returns a copy of the pending set; nil when nothing is pending.
func (p *pendingConfig) get() *api.ConfigPending {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return nil
	}
	c := *p.cur
	c.Changes = append([]api.PendingChange(nil), p.cur.Changes...)
	return &c
}

// watchConfig follows the config sources (ConfigMap glia-config, the
// GliaNodeConfigs, the node's labels) until ctx ends, and says at once —
// in `glia status`, the log, metrics and a Node condition — when the
// agent's effective config would change at its next restart.
func (a *Agent) watchConfig(ctx context.Context) {
	w := k8s.NewConfigWatch(a.clients, a.cfg.Namespace, a.cfg.NodeName)
	w.Start(ctx)
	go a.followConfig(ctx, w)
}

// followConfig recomputes the pending set on every change of the sources.
func (a *Agent) followConfig(ctx context.Context, w *k8s.ConfigWatch) {
	// Without the GliaNodeConfig CRD the watch never syncs: nothing is
	// reported then (the agent started without node configs either).
	if !cache.WaitForCacheSync(ctx.Done(), w.Synced) {
		return
	}
	for {
		in, err := w.Inputs(a.cfg.KeyFlags())
		a.setPending(ctx, status.Pending(a.conf, in, err))
		select {
		case <-ctx.Done():
			return
		case <-w.Changed():
		}
	}
}

// setPending records p when it differs from the pending set so far, and
// says so: a log line, the metrics and the Node condition GliaConfigPending.
func (a *Agent) setPending(ctx context.Context, p *api.ConfigPending) {
	a.pending.mu.Lock()
	if a.pending.said && status.SamePending(a.pending.cur, p) {
		a.pending.mu.Unlock()
		return
	}
	first := !a.pending.said
	a.pending.said = true
	if p != nil {
		p.Since = time.Now()
	}
	a.pending.cur = p
	a.pending.mu.Unlock()

	summary := status.PendingSummary(p)
	switch {
	case p == nil:
		if !first {
			a.log.Info("Config pending: none, the agent runs what its config sources say")
		}
	case p.Error != "":
		a.log.Warn("Config pending: the config sources no longer resolve; the agent keeps its current config and would refuse to restart on them",
			"error", p.Error)
	default:
		keys := make([]string, len(p.Changes))
		for i, c := range p.Changes {
			keys[i] = c.Key
		}
		a.log.Info("Config pending: "+summary, "keys", keys)
	}
	n := 0
	if p != nil {
		n = len(p.Changes)
	}
	a.metrics.SetConfigPending(n, p != nil && p.Error != "")

	reason, msg := "ConfigApplied", "the agent runs what its config sources say"
	switch {
	case p == nil:
	case p.Error != "":
		reason, msg = "ConfigInvalid", summary
	default:
		reason, msg = "RestartToApply", summary
	}
	if err := k8s.SetConfigPendingCondition(ctx, a.clients.Kube, a.cfg.NodeName, p != nil, reason, msg); err != nil {
		a.log.Warn("Could not publish node condition", "condition", k8s.ConditionConfigPending, "error", err)
	}
}
