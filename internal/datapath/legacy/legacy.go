// Package legacy is glia's legacy datapath: the node's kernel routing table
// carries pod traffic (a /32 route per local pod, a route per remote node's
// pod CIDR via that node's address) and an iptables MASQUERADE rule owned by
// glia SNATs traffic that leaves the cluster. Services are left to
// kube-proxy. Every method is idempotent and re-run on each resync.
package legacy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/datapath"
)

// RouteProtocol marks the routes glia installs, so it removes only its own.
const RouteProtocol netlink.RouteProtocol = 0x67 // 'g'

const (
	natTable   = "nat"
	masqChain  = "GLIA-POSTROUTING"
	masqJumpTo = "POSTROUTING"
	// HostIfPrefix is the prefix of the host side of every pod veth.
	HostIfPrefix = "gl"
)

// Datapath is the legacy datapath for one node.
type Datapath struct {
	log  *slog.Logger
	node datapath.LocalNode
	opts datapath.Options

	mu  sync.Mutex
	ipt *iptables.IPTables
}

var _ datapath.Datapath = (*Datapath)(nil)

// New returns the legacy datapath. It touches nothing until Init.
func New(log *slog.Logger, node datapath.LocalNode, opts datapath.Options) (*Datapath, error) {
	if opts.BPFMasquerade || opts.KubeProxyReplacement || opts.HostRoutingBPF {
		return nil, errors.New("legacy datapath cannot do BPF masquerade, kube-proxy replacement or BPF host routing: use the bpf datapath")
	}
	if opts.RoutingMode != "native" {
		return nil, fmt.Errorf("legacy datapath supports routing-mode=native only (got %q): set routing-mode: \"native\" or use the bpf datapath for tunnel mode", opts.RoutingMode)
	}
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w (install the iptables package)", err)
	}
	return &Datapath{log: log.With("subsys", "datapath-legacy"), node: node, opts: opts, ipt: ipt}, nil
}

func (d *Datapath) Name() string { return "legacy" }

// Init enables forwarding, makes unallocated addresses of the node's pod
// CIDR unreachable (instead of routed to the default gateway) and installs
// or removes the masquerade rule as configured.
func (d *Datapath) Init(ctx context.Context) error {
	for k, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "0"} {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	unreach := &netlink.Route{Dst: ipnet(d.node.PodCIDR), Type: unix.RTN_UNREACHABLE, Protocol: RouteProtocol}
	if err := netlink.RouteReplace(unreach); err != nil {
		return fmt.Errorf("unreachable route for %s: %w", d.node.PodCIDR, err)
	}
	return d.syncMasquerade()
}

// masqRule SNATs what pods of this node send outside the cluster, except
// traffic to other pods and traffic into local pods.
func (d *Datapath) masqRule() []string {
	return []string{"-s", d.node.PodCIDR.String(), "!", "-d", d.node.ClusterCIDR.String(),
		"!", "-o", HostIfPrefix + "+", "-m", "comment", "--comment", "glia: masquerade traffic leaving the cluster",
		"-j", "MASQUERADE"}
}

func (d *Datapath) syncMasquerade() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.opts.Masquerade {
		return d.removeMasquerade()
	}
	exists, err := d.ipt.ChainExists(natTable, masqChain)
	if err != nil {
		return err
	}
	if !exists {
		if err := d.ipt.NewChain(natTable, masqChain); err != nil {
			return fmt.Errorf("create chain %s: %w", masqChain, err)
		}
	}
	// The chain holds exactly our rule: replace whatever else is there.
	rules, err := d.ipt.List(natTable, masqChain)
	if err != nil {
		return err
	}
	want := "-A " + masqChain + " " + strings.Join(quoteArgs(d.masqRule()), " ")
	if len(rules) != 2 || !sameRule(rules[1], want) {
		if err := d.ipt.ClearChain(natTable, masqChain); err != nil {
			return err
		}
		if err := d.ipt.Append(natTable, masqChain, d.masqRule()...); err != nil {
			return fmt.Errorf("masquerade rule: %w", err)
		}
		d.log.Info("Installed iptables masquerade rule", "chain", masqChain, "podCIDR", d.node.PodCIDR, "clusterCIDR", d.node.ClusterCIDR)
	}
	jump := []string{"-m", "comment", "--comment", "glia: masquerade", "-j", masqChain}
	return d.ipt.AppendUnique(natTable, masqJumpTo, jump...)
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

func (d *Datapath) removeMasquerade() error {
	exists, err := d.ipt.ChainExists(natTable, masqChain)
	if err != nil || !exists {
		return err
	}
	jump := []string{"-m", "comment", "--comment", "glia: masquerade", "-j", masqChain}
	if err := d.ipt.DeleteIfExists(natTable, masqJumpTo, jump...); err != nil {
		return err
	}
	return d.ipt.ClearAndDeleteChain(natTable, masqChain)
}

// EnsureMasquerade installs (or repairs) glia's iptables masquerade rule
// for node, the one the legacy datapath's Init installs with masquerading
// on. The bpf datapath calls it when it masquerades with iptables
// (kube-proxy replacement without BPF masquerade). Idempotent.
func EnsureMasquerade(log *slog.Logger, node datapath.LocalNode) error {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return fmt.Errorf("iptables: %w (install the iptables package)", err)
	}
	d := &Datapath{log: log.With("subsys", "datapath-legacy"), node: node, opts: datapath.Options{Masquerade: true}, ipt: ipt}
	return d.syncMasquerade()
}

// RemoveMasquerade deletes glia's iptables masquerade rule and chain; the
// bpf datapath calls it when it takes masquerading over.
func RemoveMasquerade() error {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return err
	}
	return (&Datapath{ipt: ipt}).removeMasquerade()
}

// MasqueradeRules lists the rules of glia's masquerade chain (for status and tests).
func MasqueradeRules() ([]string, error) {
	ipt, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, err
	}
	exists, err := ipt.ChainExists(natTable, masqChain)
	if err != nil || !exists {
		return nil, err
	}
	return ipt.List(natTable, masqChain)
}

// UpsertEndpoint routes the pod's address to its veth and pins its
// neighbour entry, so the node never has to ARP for it.
func (d *Datapath) UpsertEndpoint(ctx context.Context, ep api.Endpoint) error {
	ip, err := netip.ParseAddr(ep.IP)
	if err != nil {
		return fmt.Errorf("endpoint %s: bad IP %q", ep.Attachment, ep.IP)
	}
	link, err := netlinksafe.LinkByName(ep.HostIfName)
	if err != nil {
		return fmt.Errorf("endpoint %s: host interface %s: %w", ep.Attachment, ep.HostIfName, err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: host32(ip), Scope: netlink.SCOPE_LINK, Protocol: RouteProtocol}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s dev %s: %w", ip, ep.HostIfName, err)
	}
	if ep.PodMAC != "" {
		mac, err := net.ParseMAC(ep.PodMAC)
		if err != nil {
			return fmt.Errorf("endpoint %s: bad pod MAC %q", ep.Attachment, ep.PodMAC)
		}
		n := &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: ip.AsSlice(), HardwareAddr: mac}
		if err := netlink.NeighSet(n); err != nil {
			return fmt.Errorf("neighbour %s on %s: %w", ip, ep.HostIfName, err)
		}
	}
	return nil
}

// DeleteEndpoint removes the pod's route; the veth itself is the CNI
// plugin's to delete.
func (d *Datapath) DeleteEndpoint(ctx context.Context, ep api.Endpoint) error {
	ip, err := netip.ParseAddr(ep.IP)
	if err != nil {
		return nil
	}
	return deleteRoutes(func(r netlink.Route) bool {
		return r.Dst != nil && r.Dst.String() == host32(ip).String()
	})
}

// SyncEndpoints removes /32 routes of glia's whose pod is gone.
func (d *Datapath) SyncEndpoints(ctx context.Context, eps []api.Endpoint) error {
	live := map[string]bool{}
	for _, ep := range eps {
		if ip, err := netip.ParseAddr(ep.IP); err == nil {
			live[host32(ip).String()] = true
		}
		if err := d.UpsertEndpoint(ctx, ep); err != nil {
			d.log.Warn("Endpoint not programmed", "endpoint", ep.Attachment, "error", err)
		}
	}
	return deleteRoutes(func(r netlink.Route) bool {
		if r.Dst == nil {
			return false
		}
		ones, _ := r.Dst.Mask.Size()
		return ones == 32 && !live[r.Dst.String()]
	})
}

// SyncNodes installs "podCIDR via nodeIP" for every other node
// (auto-direct-node-routes) and removes routes of nodes that are gone.
func (d *Datapath) SyncNodes(ctx context.Context, nodes []datapath.RemoteNode) error {
	want := map[string]datapath.RemoteNode{}
	if d.opts.AutoDirectNodeRoutes {
		for _, n := range nodes {
			if !n.PodCIDR.IsValid() || !n.IP.IsValid() || n.Name == d.node.Name {
				continue
			}
			want[n.PodCIDR.Masked().String()] = n
		}
	}
	dev, err := netlinksafe.LinkByName(d.node.Device)
	if err != nil {
		return fmt.Errorf("node device %s: %w", d.node.Device, err)
	}
	var errs []error
	for cidr, n := range want {
		r := &netlink.Route{Dst: ipnet(n.PodCIDR.Masked()), Gw: n.IP.AsSlice(), LinkIndex: dev.Attrs().Index, Protocol: RouteProtocol}
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s (node %s): %w", cidr, n.IP, n.Name, err))
		}
	}
	err = deleteRoutes(func(r netlink.Route) bool {
		if r.Dst == nil || r.Gw == nil {
			return false
		}
		_, ok := want[r.Dst.String()]
		return !ok
	})
	return errors.Join(append(errs, err)...)
}

// SyncServices is kube-proxy's job in the legacy datapath.
func (d *Datapath) SyncServices(ctx context.Context, svcs []datapath.Service) error { return nil }

// UpdateServices is kube-proxy's job in the legacy datapath: it does
// nothing.
func (d *Datapath) UpdateServices(ctx context.Context, changed map[string][]datapath.Service) error {
	return nil
}

// Close releases nothing that carries traffic: routes and rules stay.
func (d *Datapath) Close() error { return nil }

// deleteRoutes deletes the IPv4 routes of glia's protocol that match.
func deleteRoutes(match func(netlink.Route) bool) error {
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || !match(r) {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func host32(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
}
