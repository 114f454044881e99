package linux

import (
	"fmt"

	"github.com/google/nftables"
)

// kube-proxy's entry points into its rules, in either of its modes.
const (
	kubeProxyChain   = "KUBE-SERVICES" // iptables mode, nat table
	kubeProxyNFTable = "kube-proxy"    // nftables mode, table ip kube-proxy
)

// KubeProxyRulesPresent says whether kube-proxy has programmed the node's
// Services: its iptables chain holds rules, or its nftables table exists.
// A node leaving kube-proxy replacement waits for this before the eBPF
// programs that balanced its Services go, so that new connections always
// find a load balancer.
func KubeProxyRulesPresent() (bool, error) {
	t, err := ipt()
	if err != nil {
		return false, err
	}
	ok, err := t.ChainExists(natTable, kubeProxyChain)
	if err != nil {
		return false, fmt.Errorf("look for kube-proxy's chain %s: %w", kubeProxyChain, err)
	}
	if ok {
		rules, err := t.List(natTable, kubeProxyChain)
		if err != nil {
			return false, fmt.Errorf("list kube-proxy's chain %s: %w", kubeProxyChain, err)
		}
		if len(rules) > 1 { // the first line is the chain itself
			return true, nil
		}
	}
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, tb := range tables {
		if tb.Name == kubeProxyNFTable {
			return true, nil
		}
	}
	return false, nil
}
