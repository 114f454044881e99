package agent

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	bpfdp "glia.dev/glia/internal/datapath/bpf"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/maps"
)

// initDatapath initialises the node's datapath. A legacy datapath
// replacing an eBPF one (if it ran here) first hands the flows the eBPF
// maps translate to the kernel's connection tracking, before its
// masquerade rule could take them as new (handover.go of package bpf);
// the eBPF programs keep carrying them until leaveBPF.
func (a *Agent) initDatapath(ctx context.Context) (datapath.Host, error) {
	if a.dp.Name() == config.DatapathLegacy {
		if _, err := bpfdp.HandBackPinned(a.log, a.node, a.cfg.BPFFSDir); err != nil {
			a.log.Warn("Handing the eBPF datapath's flows to the kernel failed; they may be interrupted", "error", err)
		}
	}
	return a.dp.Init(ctx)
}

// kubeProxyWait bounds how long a node leaving kube-proxy replacement
// waits for kube-proxy's rules before the eBPF programs that balanced its
// Services go.
const kubeProxyWait = time.Minute

// leaveBPF finishes a switch from the eBPF datapath to the legacy one,
// once the kernel routes every pod and node: when the eBPF datapath
// balanced the Services here, it waits (bounded) for kube-proxy's rules so
// that new connections find a load balancer; it hands the flows opened
// since the first handback to the kernel; then it detaches the programs
// and removes the pins. Established flows continue on the kernel entries
// the handbacks wrote.
func (a *Agent) leaveBPF(ctx context.Context) {
	if _, err := os.Stat(filepath.Join(a.cfg.BPFFSDir, maps.NameCT)); err != nil {
		return // no eBPF datapath ran here
	}
	owners, err := bpfdp.ReadOwners(a.dpStateDir)
	if err != nil {
		a.log.Warn("Handover record unreadable", "error", err)
	}
	if owners.Services == bpfdp.OwnerBPF && !a.modes.KubeProxyReplacement {
		a.waitKubeProxy(ctx)
	}
	if _, err := bpfdp.HandBackPinned(a.log, a.node, a.cfg.BPFFSDir); err != nil {
		a.log.Warn("Handing the eBPF datapath's flows to the kernel failed; they may be interrupted", "error", err)
	}
	if err := bpfdp.Cleanup(a.log, a.cfg.BPFFSDir, a.dpStateDir, a.cfg.Device); err != nil {
		a.log.Warn("Removing eBPF datapath leftovers failed", "error", err)
		return
	}
	if err := bpfdp.WriteOwners(a.dpStateDir, bpfdp.Owners{Masquerade: bpfdp.OwnerKernel, Services: bpfdp.OwnerKernel}); err != nil {
		a.log.Warn("Cannot record the handover", "error", err)
	}
}

// waitKubeProxy waits until kube-proxy programmed the node's Services, or
// kubeProxyWait passed.
func (a *Agent) waitKubeProxy(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, kubeProxyWait)
	defer cancel()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	a.log.Info("Waiting for kube-proxy's rules before the eBPF load balancer goes", "key", config.KeyKubeProxyReplacement, "max", kubeProxyWait)
	for {
		ok, err := linux.KubeProxyRulesPresent()
		if ok {
			a.log.Info("kube-proxy balances the node's Services")
			return
		}
		select {
		case <-ctx.Done():
			a.log.Warn("kube-proxy's rules did not appear: new connections to Services fail until it runs", "waited", kubeProxyWait, "error", err)
			return
		case <-t.C:
		}
	}
}
