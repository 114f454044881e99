package bpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/statedb/reconciler"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/config"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

// VXLANDevice is the collect_md VXLAN device of tunnel mode.
const VXLANDevice = "glia_vxlan"

// VXLANPort is the UDP port of the tunnel.
const VXLANPort = 8472

// vxlanOverhead is what VXLAN over IPv4 adds to a frame: outer IPv4 (20),
// UDP (8), VXLAN (8) and inner Ethernet (14) headers.
const vxlanOverhead = 50

// vxlanMAC is the same on every node (VXLAN_MAC in bpf/lib/common.h).
var vxlanMAC = net.HardwareAddr{0x02, 0x67, 0x6c, 0x69, 0x61, 0x01}

// Datapath is the eBPF datapath of one node: the loader (load.go) and the
// attachments (attach.go) it shares with its units — endpoints
// (endpoints.go), node routing (nodes.go), load balancing (lb.go over the
// writer of services.go), device programs (programs.go) and socket load
// balancing (socklb.go). All kernel work happens in the network namespace
// of the calling thread: the node's.
type Datapath struct {
	log  *slog.Logger
	node datapath.LocalNode
	opts datapath.Options

	mu       sync.Mutex
	linksDir string
	tcx      bool // attach with tcx, else tc clsact filters
	objs     *objects
	eps      *maps.Endpoints
	tunnel   *maps.Tunnel
	nodeIPs  *maps.NodeIPs
	lb       *lbWriter
	devIndex int
	// migrations are what Init did with pinned maps of another layout
	// or size.
	migrations []maps.Migration

	// The handover of established flows (handover.go).
	owners     Owners
	svcSeeds   map[maps.SvcKey][]svcSeed
	secondPass bool
}

var _ datapath.Datapath = (*Datapath)(nil)

// New checks the settings; it touches nothing until Init.
func New(log *slog.Logger, node datapath.LocalNode, opts datapath.Options) (*Datapath, error) {
	if !node.IP.Is4() {
		return nil, fmt.Errorf("node address %v: the eBPF datapath needs an IPv4 node address", node.IP)
	}
	if !node.PodCIDR.Addr().Is4() || !node.ClusterCIDR.Addr().Is4() {
		return nil, fmt.Errorf("pod CIDR %v / cluster CIDR %v: IPv4 prefixes required", node.PodCIDR, node.ClusterCIDR)
	}
	if node.Device == "" {
		return nil, errors.New("no node device")
	}
	if opts.BPFFSDir == "" {
		return nil, errors.New("no bpffs directory to pin maps and links in")
	}
	switch opts.Modes.RoutingMode {
	case "native", "tunnel":
	default:
		return nil, fmt.Errorf("routing-mode %q: want native or tunnel", opts.Modes.RoutingMode)
	}
	switch opts.LBAlgorithm {
	case "", "random", "maglev":
	default:
		return nil, fmt.Errorf("load-balancing algorithm %q: want random or maglev", opts.LBAlgorithm)
	}
	return &Datapath{
		log: log.With("subsys", "datapath-bpf"), node: node, opts: opts,
		linksDir: filepath.Join(opts.BPFFSDir, "links"), tcx: opts.Kernel.TCX,
	}, nil
}

// Name implements datapath.Datapath.
func (d *Datapath) Name() string { return config.DatapathBPF }

func (d *Datapath) flags() uint32 {
	var f uint32
	if d.opts.HostRoutingBPF() {
		f |= FlagHostRouting
	}
	if d.opts.BPFMasquerade() {
		f |= FlagMasquerade
	}
	if d.opts.Modes.KubeProxyReplacement {
		f |= FlagKPR
	}
	if d.opts.Tunnel() {
		f |= FlagTunnel
	}
	return f
}

// Init loads the programs, re-using pinned maps, and attaches them to the
// node's device (and the VXLAN device in tunnel mode), replacing programs a
// previous run attached without a moment of detachment. Masquerading never
// pauses: the iptables rule goes in before the programs when iptables
// masquerades, and goes only after the BPF masquerade program is attached
// (the masquerade reconciler prunes it once Init has returned).
func (d *Datapath) Init(ctx context.Context) (datapath.Host, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := d.opts.Kernel
	if !d.tcx {
		d.log.Info("tcx is not available in this kernel: attaching with tc clsact filters")
	}
	if d.opts.HostRoutingBPF() && (!k.BPFRedirectPeer || !k.BPFRedirectNeigh || !k.FIBLookup) {
		return datapath.Host{}, fmt.Errorf("BPF host routing needs bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup (have %+v): set enable-host-legacy-routing=true", k)
	}
	host := datapath.Host{Sysctls: []*state.Sysctl{{Name: "net.ipv4.ip_forward", Value: "1"}}}
	// Forwarding before the programs: the stack carries what they pass on.
	if _, err := linux.EnsureSysctl("net.ipv4.ip_forward", "1"); err != nil {
		return host, err
	}

	dev, err := netlinksafe.LinkByName(d.node.Device)
	if err != nil {
		return host, fmt.Errorf("node device %s: %w", d.node.Device, err)
	}
	d.devIndex = dev.Attrs().Index
	cfg := Config{
		NodeIP: d.node.IP, PodCIDR: d.node.PodCIDR, ClusterCIDR: d.node.ClusterCIDR,
		NodeMAC: dev.Attrs().HardwareAddr, NodeIfIndex: uint32(d.devIndex), Flags: d.flags(),
		MaxEntries: MaxEntries(d.opts.MapSizes), SharedMaps: d.opts.PolicyMaps,
	}
	socketLB := d.opts.SocketLBCgroup != "" && d.opts.Modes.KubeProxyReplacement
	if d.opts.SocketLBCgroup != "" && !socketLB {
		d.log.Info("socket load balancing off: Services are kube-proxy's (kube-proxy-replacement=false)")
	}
	if socketLB {
		if cfg.NetnsCookie, err = netnsCookie(); err != nil {
			return host, err
		}
		cfg.SocketLB = true
	}
	var vxlan netlink.Link
	if d.opts.Tunnel() {
		if vxlan, err = d.ensureVXLAN(dev); err != nil {
			return host, err
		}
		cfg.VXLANIfIndex = uint32(vxlan.Attrs().Index)
		// The effective rp_filter of a device is the larger of its own
		// and "all"'s: a NodePort flow's inner source is another node's
		// address.
		host.Sysctls = append(host.Sysctls,
			&state.Sysctl{Name: "net.ipv4.conf." + VXLANDevice + ".rp_filter", Value: "0"},
			&state.Sysctl{Name: "net.ipv4.conf.all.rp_filter", Value: "0"})
	}

	objs, err := loadObjects(d.log, cfg, d.opts.BPFFSDir)
	if err != nil {
		return host, err
	}
	if d.objs != nil {
		d.objs.Close()
	}
	d.objs = objs
	d.eps = maps.NewEndpoints(objs.Maps[maps.NameEndpoints])
	d.tunnel = maps.NewTunnel(objs.Maps[maps.NameTunnel])
	d.nodeIPs = maps.NewNodeIPs(objs.Maps[maps.NameNodeIPs])
	// This node's address before the programs run; the other nodes'
	// come with the nodes table.
	if err := d.nodeIPs.Update(d.node.IP, maps.NodeValue{Flags: maps.NodeFlagLocal}); err != nil {
		return host, fmt.Errorf("node address %s: %w", d.node.IP, err)
	}
	d.lb = newLBWriter(maps.NewServices(objs.Maps[maps.NameServices]), maps.NewBackends(objs.Maps[maps.NameBackends]),
		maps.NewSlots(objs.Maps[maps.NameSvcSlots]), maps.NewSlots(objs.Maps[maps.NameMaglev]), d.opts.LBAlgorithm == "maglev")
	d.lb.affinity = maps.NewAffinity(objs.Maps[maps.NameAffinity])
	st, err := d.lb.restore()
	if err != nil {
		return host, fmt.Errorf("restore services from the pinned maps: %w", err)
	}
	if st.Frontends > 0 || st.Backends > 0 {
		d.log.Info("Restored services from the pinned maps", "frontends", st.Frontends, "backends", st.Backends,
			"to-rewrite", st.Rewrite, "stale-slots-removed", st.StaleSlots)
	}
	// The handover before anything of this run is attached, and before
	// a kube-proxy-replacement run's services go.
	d.handoverBeforeAttach(maps.NewBackends(objs.Maps[maps.NameBackends]))
	if !d.opts.Modes.KubeProxyReplacement && (st.Frontends > 0 || st.Backends > 0) {
		// kube-proxy balances Services here: what a kube-proxy-replacement
		// run wrote goes.
		if err := d.lb.sync(func(func(*state.Service) bool) {}); err != nil {
			return host, fmt.Errorf("remove services a kube-proxy-replacement run left: %w", err)
		}
	}

	if err := os.MkdirAll(d.linksDir, 0o700); err != nil {
		return host, fmt.Errorf("create link pin directory: %w", err)
	}
	host.Programs = []*state.Program{
		{Program: "from_netdev", Interface: d.node.Device},
		{Program: "to_netdev", Interface: d.node.Device, Egress: true},
	}
	if vxlan != nil {
		host.Programs = append(host.Programs,
			&state.Program{Program: "from_netdev", Interface: VXLANDevice},
			&state.Program{Program: "to_netdev", Interface: VXLANDevice, Egress: true})
	}
	switch {
	case d.opts.Masquerade() && !d.opts.BPFMasquerade():
		host.Masquerade = []*state.MasqueradeRule{{PodCIDR: d.node.PodCIDR, ClusterCIDR: d.node.ClusterCIDR}}
		if _, err := linux.EnsureMasquerade(d.node.PodCIDR, d.node.ClusterCIDR); err != nil {
			return host, fmt.Errorf("iptables masquerade: %w", err)
		}
	case d.opts.BPFMasquerade():
		if err := reservePortRange(d.log, d.opts.StateDir); err != nil {
			return host, err
		}
	}
	for _, p := range host.Programs {
		if _, err := d.attachProgram(p); err != nil {
			return host, err
		}
	}
	// The pods' programs too, now rather than when the endpoint
	// reconciler gets to them: old and new programs must not share a
	// node's flows for longer than it takes.
	if err := d.reattachEndpoints(); err != nil {
		return host, err
	}
	if socketLB {
		if err := d.attachSocketLB(d.opts.SocketLBCgroup); err != nil {
			return host, err
		}
	} else if err := d.detachSocketLB(); err != nil {
		return host, err
	}
	if vxlan == nil {
		if err := d.removeVXLAN(); err != nil {
			return host, err
		}
	}
	// Every program of this version is attached: the maps of an earlier
	// layout or size, kept for the programs they replaced, go now.
	migs, err := objs.finish()
	d.migrations = migs
	if err != nil {
		return host, fmt.Errorf("finish migrating the pinned maps: %w", err)
	}
	d.handoverAfterAttach()
	d.log.Info("eBPF datapath ready", "device", d.node.Device, "routing-mode", d.opts.Modes.RoutingMode,
		"host-routing-bpf", d.opts.HostRoutingBPF(), "bpf-masquerade", d.opts.BPFMasquerade(),
		"kube-proxy-replacement", d.opts.Modes.KubeProxyReplacement, "tcx", d.tcx, "socket-lb-cgroup", map[bool]string{true: d.opts.SocketLBCgroup}[socketLB])
	return host, nil
}

func (d *Datapath) program(name string) *ebpf.Program {
	switch name {
	case "from_container":
		return d.objs.FromContainer
	case "from_netdev":
		return d.objs.FromNetdev
	}
	return d.objs.ToNetdev
}

// ensureVXLAN creates (or checks) the tunnel device: external (collect_md,
// the programs set the remote per packet), no learning, UDP port
// VXLANPort, NOARP (the stack's frames to it are addressed by to_netdev,
// never by ARP), MTU 50 below the node device's, and no IPv6.
func (d *Datapath) ensureVXLAN(dev netlink.Link) (netlink.Link, error) {
	mtu := dev.Attrs().MTU - vxlanOverhead
	if l, err := netlinksafe.LinkByName(VXLANDevice); err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || !vx.FlowBased || vx.Port != VXLANPort || vx.Learning {
			d.log.Info("replacing tunnel device with other settings", "device", VXLANDevice)
			if err := netlink.LinkDel(l); err != nil {
				return nil, fmt.Errorf("replace %s: %w", VXLANDevice, err)
			}
		}
	}
	l, err := netlinksafe.LinkByName(VXLANDevice)
	if err != nil {
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: VXLANDevice, MTU: mtu, HardwareAddr: vxlanMAC},
			FlowBased: true, Port: VXLANPort, Learning: false,
		}
		if err := netlink.LinkAdd(vx); err != nil {
			return nil, fmt.Errorf("create %s: %w", VXLANDevice, err)
		}
		if l, err = netlinksafe.LinkByName(VXLANDevice); err != nil {
			return nil, fmt.Errorf("find %s: %w", VXLANDevice, err)
		}
		d.log.Info("created tunnel device", "device", VXLANDevice, "port", VXLANPort, "mtu", mtu)
	}
	a := l.Attrs()
	if a.MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("set %s mtu %d: %w", VXLANDevice, mtu, err)
		}
	}
	if a.Flags&net.FlagUp == 0 || a.RawFlags&unix.IFF_NOARP == 0 {
		if err := netlink.LinkSetARPOff(l); err != nil {
			return nil, fmt.Errorf("set %s noarp: %w", VXLANDevice, err)
		}
	}
	if !bytes.Equal(a.HardwareAddr, vxlanMAC) {
		if err := netlink.LinkSetHardwareAddr(l, vxlanMAC); err != nil {
			return nil, fmt.Errorf("set %s address: %w", VXLANDevice, err)
		}
	}
	for _, s := range []struct{ name, value string }{
		{"net.ipv4.conf." + VXLANDevice + ".rp_filter", "0"},
		{"net.ipv4.conf.all.rp_filter", "0"},
	} {
		if _, err := linux.EnsureSysctl(s.name, s.value); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat("/proc/sys/net/ipv6/conf/" + VXLANDevice); err == nil {
		if _, err := linux.EnsureSysctl("net.ipv6.conf."+VXLANDevice+".disable_ipv6", "1"); err != nil {
			return nil, err
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("set %s up: %w", VXLANDevice, err)
		}
	}
	return netlinksafe.LinkByName(VXLANDevice)
}

// removeVXLAN removes the tunnel device and its program pins a tunnel-mode
// run left (native routing needs neither).
func (d *Datapath) removeVXLAN() error {
	l, err := netlinksafe.LinkByName(VXLANDevice)
	if err != nil {
		return nil
	}
	var errs []error
	for _, a := range []attachment{{prog: "from_netdev", ifname: VXLANDevice, ifindex: l.Attrs().Index},
		{prog: "to_netdev", ifname: VXLANDevice, ifindex: l.Attrs().Index, egress: true}} {
		errs = append(errs, d.detach(a))
	}
	if err := netlink.LinkDel(l); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", VXLANDevice, err))
	} else {
		d.log.Info("removed tunnel device: routing-mode is native", "device", VXLANDevice)
	}
	return errors.Join(errs...)
}

// locked runs f, one of the units' reconciler operations, holding the
// datapath's lock, once Init has loaded the programs and maps.
func (d *Datapath) locked(f func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return errors.New("eBPF datapath not initialised: call Init first")
	}
	return f()
}

// Migrations returns what Init did with pinned maps of another layout or
// size (for status and metrics).
func (d *Datapath) Migrations() []maps.Migration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]maps.Migration(nil), d.migrations...)
}

// Endpoints implements datapath.Datapath.
func (d *Datapath) Endpoints() reconciler.Operations[*state.Endpoint] { return endpointOps{d} }

// Nodes implements datapath.Datapath.
func (d *Datapath) Nodes() reconciler.Operations[*state.Node] { return nodeOps{d} }

// Services implements datapath.Datapath: nil without kube-proxy
// replacement (kube-proxy's job; Init's restore keeps what an earlier run
// wrote until Cleanup or the next kube-proxy-replacement run).
func (d *Datapath) Services() reconciler.Operations[*state.Service] {
	if !d.opts.Modes.KubeProxyReplacement {
		return nil
	}
	return serviceOps{d}
}

// Programs implements datapath.Datapath.
func (d *Datapath) Programs() reconciler.Operations[*state.Program] { return programOps{d} }

// Maps returns typed wrappers of the loaded maps (for the CLI and tests).
func (d *Datapath) Maps() (*maps.Endpoints, *maps.CT, *maps.NAT) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil, nil, nil
	}
	return d.eps, maps.NewCT(d.objs.Maps[maps.NameCT]), maps.NewNAT(d.objs.Maps[maps.NameNAT])
}

// Close releases file descriptors; programs stay attached through their
// pinned links and maps stay pinned.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.objs == nil {
		return nil
	}
	err := d.objs.Close()
	d.objs = nil
	return err
}
