package linux

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

const (
	natTable   = "nat"
	masqChain  = "GLIA-POSTROUTING"
	masqJumpTo = "POSTROUTING"
)

// HostIfPrefix is the prefix of the host side of every pod veth.
const HostIfPrefix = "gl"

// masqJump is the rule in POSTROUTING that sends packets to glia's chain.
var masqJump = []string{"-m", "comment", "--comment", "glia: masquerade", "-j", masqChain}

// masqRule SNATs what pods of this node send outside the cluster, except
// traffic to other pods and traffic into local pods.
func masqRule(podCIDR, clusterCIDR netip.Prefix) []string {
	return []string{"-s", podCIDR.String(), "!", "-d", clusterCIDR.String(),
		"!", "-o", HostIfPrefix + "+", "-m", "comment", "--comment", "glia: masquerade traffic leaving the cluster",
		"-j", "MASQUERADE"}
}

func ipt() (*iptables.IPTables, error) {
	t, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w (install the iptables package)", err)
	}
	return t, nil
}

// EnsureMasquerade makes glia's chain hold exactly the masquerade rule for
// podCIDR (not to clusterCIDR) and POSTROUTING jump to it. It says whether
// anything had to change.
func EnsureMasquerade(podCIDR, clusterCIDR netip.Prefix) (bool, error) {
	t, err := ipt()
	if err != nil {
		return false, err
	}
	changed := false
	exists, err := t.ChainExists(natTable, masqChain)
	if err != nil {
		return false, err
	}
	if !exists {
		if err := t.NewChain(natTable, masqChain); err != nil {
			return false, fmt.Errorf("create chain %s: %w", masqChain, err)
		}
		changed = true
	}
	// The chain holds exactly our rule: replace whatever else is there.
	rules, err := t.List(natTable, masqChain)
	if err != nil {
		return changed, err
	}
	rule := masqRule(podCIDR, clusterCIDR)
	want := "-A " + masqChain + " " + strings.Join(quoteArgs(rule), " ")
	if len(rules) != 2 || !sameRule(rules[1], want) {
		if err := t.ClearChain(natTable, masqChain); err != nil {
			return changed, err
		}
		if err := t.Append(natTable, masqChain, rule...); err != nil {
			return true, fmt.Errorf("masquerade rule: %w", err)
		}
		changed = true
	}
	has, err := t.Exists(natTable, masqJumpTo, masqJump...)
	if err != nil {
		return changed, err
	}
	if !has {
		if err := t.Append(natTable, masqJumpTo, masqJump...); err != nil {
			return true, fmt.Errorf("jump to %s: %w", masqChain, err)
		}
		changed = true
	}
	return changed, nil
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " :") {
			a = `"` + a + `"`
		}
		out[i] = a
	}
	return out
}

// sameRule compares an iptables -S line with the rule we want, ignoring how
// iptables normalises spacing.
func sameRule(have, want string) bool {
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	return norm(have) == norm(want)
}

// RemoveMasquerade deletes glia's jump and chain; it says whether there
// was anything to delete.
func RemoveMasquerade() (bool, error) {
	t, err := ipt()
	if err != nil {
		return false, err
	}
	exists, err := t.ChainExists(natTable, masqChain)
	if err != nil || !exists {
		return false, err
	}
	if err := t.DeleteIfExists(natTable, masqJumpTo, masqJump...); err != nil {
		return true, err
	}
	return true, t.ClearAndDeleteChain(natTable, masqChain)
}

// MasqueradeRules lists the rules of glia's masquerade chain (for status
// and tests); none when the chain does not exist.
func MasqueradeRules() ([]string, error) {
	t, err := ipt()
	if err != nil {
		return nil, err
	}
	exists, err := t.ChainExists(natTable, masqChain)
	if err != nil || !exists {
		return nil, err
	}
	return t.List(natTable, masqChain)
}
