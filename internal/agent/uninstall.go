package agent

import (
	"context"
	"time"

	"glia.dev/glia/internal/k8s"
	"glia.dev/glia/internal/nodeinit"
)

// uninstallIfRemoved runs as the agent stops: when glia is being
// uninstalled (its DaemonSet or its RBAC gone), it takes glia's CNI config
// and plugin off the node, so no new pod is handed to a CNI whose agent
// will not come back. A restart, an upgrade or a drain leaves them: the
// DaemonSet is still there. When the API cannot tell, nothing is removed.
// Pinned maps and attached programs stay either way: running pods keep
// their datapath until they are drained.
func (a *Agent) uninstallIfRemoved() {
	if a.cfg.DaemonSet == "" || a.clients == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gone, why, err := k8s.Uninstalled(ctx, a.clients.Kube, a.cfg.Namespace, a.cfg.DaemonSet)
	if err != nil {
		a.log.Warn("Could not tell whether glia is being uninstalled; keeping the CNI config", "error", err)
		return
	}
	if !gone {
		return
	}
	if err := nodeinit.UninstallCNI(a.cfg.CNIBinDir, a.cfg.CNIConfDir); err != nil {
		a.log.Error("glia is being uninstalled; removing the CNI config and plugin failed", "reason", why, "error", err)
		return
	}
	a.log.Info("glia is being uninstalled: removed the CNI config and plugin from this node; pinned maps stay until the node is drained",
		"reason", why, "cniConfDir", a.cfg.CNIConfDir, "cniBinDir", a.cfg.CNIBinDir)
}
