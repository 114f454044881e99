package bpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/datapath/legacy"
	"glia.dev/glia/internal/maps"
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

// routeProtocol marks the routes glia installs (auto-direct-node-routes),
// so stale ones can be found and removed.
const routeProtocol = netlink.RouteProtocol(0xc7)

// Datapath is the eBPF datapath of one node. All kernel work happens in the
// network namespace of the calling thread: the node's.
type Datapath struct {
	log  *slog.Logger
	node datapath.LocalNode
	opts datapath.Options

	mu       sync.Mutex
	features KernelFeatures
	linksDir string
	objs     *objects
	eps      *maps.Endpoints
	tunnel   *maps.Tunnel
	nodeIPs  *maps.NodeIPs
	lb       *lbWriter
	devIndex int
	forceTC  bool // tests: use the tc fallback even where tcx exists
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
	switch opts.RoutingMode {
	case "native", "tunnel":
	default:
		return nil, fmt.Errorf("routing-mode %q: want native or tunnel", opts.RoutingMode)
	}
	switch opts.LBAlgorithm {
	case "", "random", "maglev":
	default:
		return nil, fmt.Errorf("load-balancing algorithm %q: want random or maglev", opts.LBAlgorithm)
	}
	return &Datapath{
		log: log.With("subsys", "datapath-bpf"), node: node, opts: opts,
		linksDir: filepath.Join(opts.BPFFSDir, "links"),
	}, nil
}

// Name implements datapath.Datapath.
func (d *Datapath) Name() string { return "bpf" }

func (d *Datapath) flags() uint32 {
	var f uint32
	if d.opts.HostRoutingBPF {
		f |= FlagHostRouting
	}
	if d.opts.BPFMasquerade {
		f |= FlagMasquerade
	}
	if d.opts.KubeProxyReplacement {
		f |= FlagKPR
	}
	if d.opts.RoutingMode == "tunnel" {
		f |= FlagTunnel
	}
	return f
}

func writeSysctl(path, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(path, "/", "."), value, err)
	}
	return nil
}

// Init loads the programs, re-using pinned maps, and attaches them to the
// node's device (and the VXLAN device in tunnel mode), replacing programs a
// previous run attached without a moment of detachment.
func (d *Datapath) Init(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()

	feats, err := ProbeKernel()
	if err != nil {
		return err
	}
	if d.forceTC {
		feats.TCX = false
	}
	d.features = feats
	if !feats.TCX {
		d.log.Info("tcx is not available in this kernel: attaching with tc clsact filters")
	}
	if d.opts.HostRoutingBPF && (!feats.RedirectPeer || !feats.RedirectNeigh || !feats.FIBLookup) {
		return fmt.Errorf("BPF host routing needs bpf_redirect_peer, bpf_redirect_neigh and bpf_fib_lookup (have %+v): set enable-host-legacy-routing=true", feats)
	}

	// The node forwards between pods and the network.
	if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}

	dev, err := netlinksafe.LinkByName(d.node.Device)
	if err != nil {
		return fmt.Errorf("node device %s: %w", d.node.Device, err)
	}
	d.devIndex = dev.Attrs().Index
	cfg := Config{
		NodeIP: d.node.IP, PodCIDR: d.node.PodCIDR, ClusterCIDR: d.node.ClusterCIDR,
		NodeMAC: dev.Attrs().HardwareAddr, NodeIfIndex: uint32(d.devIndex), Flags: d.flags(),
	}
	socketLB := d.opts.SocketLBCgroup != "" && d.opts.KubeProxyReplacement
	if d.opts.SocketLBCgroup != "" && !socketLB {
		d.log.Info("socket load balancing off: Services are kube-proxy's (kube-proxy-replacement=false)")
	}
	if socketLB {
		if cfg.NetnsCookie, err = netnsCookie(); err != nil {
			return err
		}
		cfg.SocketLB = true
	}
	var vxlan netlink.Link
	if d.opts.RoutingMode == "tunnel" {
		if vxlan, err = d.ensureVXLAN(dev); err != nil {
			return err
		}
		cfg.VXLANIfIndex = uint32(vxlan.Attrs().Index)
	}

	objs, err := loadObjects(d.log, cfg, d.opts.BPFFSDir)
	if err != nil {
		return err
	}
	if d.objs != nil {
		d.objs.Close()
	}
	d.objs = objs
	d.eps = maps.NewEndpoints(objs.Maps[maps.NameEndpoints])
	d.tunnel = maps.NewTunnel(objs.Maps[maps.NameTunnel])
	d.nodeIPs = maps.NewNodeIPs(objs.Maps[maps.NameNodeIPs])
	if err := d.syncNodeIPs(nil, true); err != nil {
		return err
	}
	d.lb = newLBWriter(maps.NewServices(objs.Maps[maps.NameServices]), maps.NewBackends(objs.Maps[maps.NameBackends]),
		maps.NewSlots(objs.Maps[maps.NameSvcSlots]), maps.NewSlots(objs.Maps[maps.NameMaglev]), d.opts.LBAlgorithm == "maglev")
	d.lb.affinity = maps.NewAffinity(objs.Maps[maps.NameAffinity])
	st, err := d.lb.restore()
	if err != nil {
		return fmt.Errorf("restore services from the pinned maps: %w", err)
	}
	if st.Frontends > 0 || st.Backends > 0 {
		d.log.Info("Restored services from the pinned maps", "frontends", st.Frontends, "backends", st.Backends,
			"to-rewrite", st.Rewrite, "stale-slots-removed", st.StaleSlots)
	}

	if err := os.MkdirAll(d.linksDir, 0o700); err != nil {
		return fmt.Errorf("create link pin directory: %w", err)
	}
	atts := []struct {
		a    attachment
		prog string
	}{
		{attachment{prog: "from_netdev", ifname: d.node.Device, ifindex: d.devIndex}, "from_netdev"},
		{attachment{prog: "to_netdev", ifname: d.node.Device, ifindex: d.devIndex, egress: true}, "to_netdev"},
	}
	if vxlan != nil {
		atts = append(atts,
			struct {
				a    attachment
				prog string
			}{attachment{prog: "from_netdev", ifname: VXLANDevice, ifindex: vxlan.Attrs().Index}, "from_netdev"},
			struct {
				a    attachment
				prog string
			}{attachment{prog: "to_netdev", ifname: VXLANDevice, ifindex: vxlan.Attrs().Index, egress: true}, "to_netdev"})
	}
	// Masquerading never pauses: the iptables rule goes in before the
	// programs, and out only after the BPF masquerade program is attached.
	switch {
	case d.opts.Masquerade && !d.opts.BPFMasquerade:
		if err := legacy.EnsureMasquerade(d.log, d.node); err != nil {
			return fmt.Errorf("iptables masquerade: %w", err)
		}
	case d.opts.BPFMasquerade:
		if err := reservePortRange(d.log); err != nil {
			return err
		}
	}
	for _, at := range atts {
		if err := d.attach(at.a, d.program(at.prog)); err != nil {
			return err
		}
	}
	if socketLB {
		if err := d.attachSocketLB(d.opts.SocketLBCgroup); err != nil {
			return err
		}
	} else if err := d.detachSocketLB(); err != nil {
		return err
	}
	if !d.opts.Masquerade || d.opts.BPFMasquerade {
		if err := legacy.RemoveMasquerade(); err != nil {
			return fmt.Errorf("remove iptables masquerade rule: %w", err)
		}
	}
	if vxlan == nil {
		if err := d.removeVXLAN(); err != nil {
			return err
		}
	}

	// Programs of existing endpoints get this version too, in place.
	pins, err := d.pinnedLinks("from_container")
	if err != nil {
		return err
	}
	for _, p := range pins {
		ifname := strings.TrimSuffix(strings.TrimPrefix(p, "from_container-"), "-ingress")
		link, err := netlinksafe.LinkByName(ifname)
		if err != nil {
			continue // gone: SyncEndpoints removes the pin
		}
		if err := d.attach(attachment{prog: "from_container", ifname: ifname, ifindex: link.Attrs().Index}, objs.FromContainer); err != nil {
			return err
		}
	}
	d.log.Info("eBPF datapath ready", "device", d.node.Device, "routing-mode", d.opts.RoutingMode,
		"host-routing-bpf", d.opts.HostRoutingBPF, "bpf-masquerade", d.opts.BPFMasquerade,
		"kube-proxy-replacement", d.opts.KubeProxyReplacement, "tcx", feats.TCX, "socket-lb-cgroup", map[bool]string{true: d.opts.SocketLBCgroup}[socketLB])
	return nil
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
// never by ARP), MTU 50 below the node device's, no IPv6, and no reverse
// path filter (a NodePort flow's inner source is another node's address).
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
	if err := writeSysctl("net/ipv4/conf/"+VXLANDevice+"/rp_filter", "0"); err != nil {
		return nil, err
	}
	// The effective rp_filter of a device is the larger of its own and
	// "all"'s (as the legacy datapath, glia wants it off).
	if err := writeSysctl("net/ipv4/conf/all/rp_filter", "0"); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/proc/sys/net/ipv6/conf/" + VXLANDevice); err == nil {
		if err := writeSysctl("net/ipv6/conf/"+VXLANDevice+"/disable_ipv6", "1"); err != nil {
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

func (d *Datapath) ready() error {
	if d.objs == nil {
		return errors.New("eBPF datapath not initialised: call Init first")
	}
	return nil
}

// UpsertEndpoint implements datapath.Datapath: the pod's route and map
// entry, then its program.
func (d *Datapath) UpsertEndpoint(ctx context.Context, ep api.Endpoint) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	return d.upsertEndpoint(ep)
}

func (d *Datapath) upsertEndpoint(ep api.Endpoint) error {
	ip, err := netip.ParseAddr(ep.IP)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("endpoint %s: address %q: IPv4 required", ep.ContainerID, ep.IP)
	}
	host, err := netlinksafe.LinkByName(ep.HostIfName)
	if err != nil {
		return fmt.Errorf("endpoint %s: host interface %s: %w", ip, ep.HostIfName, err)
	}
	info := maps.EndpointInfo{IfIndex: uint32(host.Attrs().Index)}
	copy(info.HostMAC[:], host.Attrs().HardwareAddr)
	podMAC, err := d.podMAC(ep)
	if err != nil {
		return fmt.Errorf("endpoint %s: %w", ip, err)
	}
	copy(info.PodMAC[:], podMAC)

	// A /32 route to the veth: the stack reaches the pod (host traffic,
	// legacy host routing) the same way the programs do.
	route := &netlink.Route{
		LinkIndex: host.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Protocol: routeProtocol,
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("endpoint %s: route: %w", ip, err)
	}
	if err := d.eps.Update(ip, info); err != nil {
		return fmt.Errorf("endpoint %s: %w", ip, err)
	}
	if err := d.attach(attachment{prog: "from_container", ifname: ep.HostIfName, ifindex: host.Attrs().Index}, d.objs.FromContainer); err != nil {
		return fmt.Errorf("endpoint %s: %w", ip, err)
	}
	return nil
}

func (d *Datapath) podMAC(ep api.Endpoint) (net.HardwareAddr, error) {
	if ep.PodMAC != "" {
		mac, err := net.ParseMAC(ep.PodMAC)
		if err != nil {
			return nil, fmt.Errorf("pod MAC %q: %w", ep.PodMAC, err)
		}
		return mac, nil
	}
	if ep.Netns == "" || ep.IfName == "" {
		return nil, errors.New("no pod MAC and no netns to read it from")
	}
	var mac net.HardwareAddr
	err := ns.WithNetNSPath(ep.Netns, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ep.IfName)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read pod MAC in %s: %w", ep.Netns, err)
	}
	return mac, nil
}

// DeleteEndpoint implements datapath.Datapath.
func (d *Datapath) DeleteEndpoint(ctx context.Context, ep api.Endpoint) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	return d.deleteEndpoint(ep.IP, ep.HostIfName)
}

func (d *Datapath) deleteEndpoint(ipStr, hostIf string) error {
	var errs []error
	if hostIf != "" {
		a := attachment{prog: "from_container", ifname: hostIf}
		if l, err := netlinksafe.LinkByName(hostIf); err == nil {
			a.ifindex = l.Attrs().Index
		}
		errs = append(errs, d.detach(a))
	}
	if ip, err := netip.ParseAddr(ipStr); err == nil {
		errs = append(errs, d.eps.Delete(ip))
		route := &netlink.Route{Dst: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Protocol: routeProtocol}
		if err := netlink.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove route to %s: %w", ip, err))
		}
	}
	return errors.Join(errs...)
}

// SyncEndpoints implements datapath.Datapath.
func (d *Datapath) SyncEndpoints(ctx context.Context, eps []api.Endpoint) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	var errs []error
	wantIP := map[netip.Addr]bool{}
	wantIf := map[string]bool{}
	for _, ep := range eps {
		if err := d.upsertEndpoint(ep); err != nil {
			errs = append(errs, err)
		}
		if ip, err := netip.ParseAddr(ep.IP); err == nil {
			wantIP[ip] = true
		}
		wantIf[ep.HostIfName] = true
	}
	cur, err := d.eps.List()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range cur {
		if !wantIP[e.Addr] {
			d.log.Info("removing stale endpoint", "ip", e.Addr)
			errs = append(errs, d.deleteEndpoint(e.Addr.String(), ""))
		}
	}
	pins, err := d.pinnedLinks("from_container")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, p := range pins {
		ifname := strings.TrimSuffix(strings.TrimPrefix(p, "from_container-"), "-ingress")
		if !wantIf[ifname] {
			d.log.Info("removing stale endpoint program", "interface", ifname)
			errs = append(errs, d.deleteEndpoint("", ifname))
		}
	}
	return errors.Join(errs...)
}

// SyncNodes implements datapath.Datapath: tunnel entries in tunnel mode,
// kernel routes to the other nodes' pod CIDRs with auto-direct-node-routes.
func (d *Datapath) SyncNodes(ctx context.Context, nodes []datapath.RemoteNode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	want := map[netip.Prefix]netip.Addr{}
	for _, n := range nodes {
		if n.PodCIDR.IsValid() && n.PodCIDR.Addr().Is4() && n.IP.Is4() && n.PodCIDR.Masked() != d.node.PodCIDR.Masked() {
			want[n.PodCIDR.Masked()] = n.IP
		}
	}
	errs := []error{d.syncNodeIPs(nodes, false)}
	tunnel := d.opts.RoutingMode == "tunnel"
	var vxIndex int
	if tunnel {
		for p, ip := range want {
			errs = append(errs, d.tunnel.Update(p, ip))
		}
		cur, err := d.tunnel.List()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, e := range cur {
			if _, ok := want[e.Prefix]; !ok {
				errs = append(errs, d.tunnel.Delete(e.Prefix))
			}
		}
		vx, err := netlinksafe.LinkByName(VXLANDevice)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("tunnel device: %w", err))...)
		}
		vxIndex = vx.Attrs().Index
	} else {
		// entries a tunnel-mode run left
		cur, err := d.tunnel.List()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, e := range cur {
			errs = append(errs, d.tunnel.Delete(e.Prefix))
		}
		if !d.opts.AutoDirectNodeRoutes {
			want = nil // routes to other nodes are someone else's
		}
	}
	// Kernel routes to the other nodes' pod CIDRs: through the tunnel
	// device (the stack's traffic to remote pods, and all pod traffic with
	// legacy host routing; to_netdev gives it its tunnel key), or via the
	// node's address (auto-direct-node-routes).
	for p, ip := range want {
		r := &netlink.Route{
			Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}, Protocol: routeProtocol,
		}
		if tunnel {
			r.LinkIndex, r.Scope, r.Src = vxIndex, netlink.SCOPE_LINK, d.node.IP.AsSlice()
		} else {
			r.Gw = ip.AsSlice()
		}
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", p, err))
		}
	}
	routes, err := netlinksafe.RouteListFiltered(unix.AF_INET, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list routes: %w", err))...)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		nodeRoute := r.Gw != nil || (vxIndex != 0 && r.LinkIndex == vxIndex) || ones < 32
		if !nodeRoute {
			continue // endpoint routes
		}
		a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		_, wanted := want[netip.PrefixFrom(a, ones)]
		// a route of the other routing mode is stale too
		if wanted && (tunnel == (r.Gw == nil)) {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}

// syncNodeIPs makes glia_node_ips hold this node's address and those of
// nodes. With keepRemote (at Init, before the nodes are known) the
// entries of other nodes stay as an earlier run left them.
func (d *Datapath) syncNodeIPs(nodes []datapath.RemoteNode, keepRemote bool) error {
	want := map[netip.Addr]uint32{d.node.IP: maps.NodeFlagLocal}
	for _, n := range nodes {
		if n.IP.Is4() && n.IP != d.node.IP {
			want[n.IP] = 0
		}
	}
	var errs []error
	for ip, flags := range want {
		if err := d.nodeIPs.Update(ip, maps.NodeValue{Flags: flags}); err != nil {
			errs = append(errs, fmt.Errorf("node address %s: %w", ip, err))
		}
	}
	cur, err := d.nodeIPs.List()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range cur {
		if _, ok := want[e.Addr]; ok || (keepRemote && e.Flags&maps.NodeFlagLocal == 0) {
			continue
		}
		errs = append(errs, d.nodeIPs.Delete(e.Addr))
	}
	return errors.Join(errs...)
}

// SyncServices implements datapath.Datapath. It compares svcs with what
// it wrote before (kept in memory, restored from the pinned maps by Init)
// and touches only the entries that differ: with nothing changed it makes
// no map operation at all. Without kube-proxy replacement it removes any
// service left in the maps.
func (d *Datapath) SyncServices(ctx context.Context, svcs []datapath.Service) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	if !d.opts.KubeProxyReplacement {
		svcs = nil
	}
	return d.lb.sync(svcs)
}

// UpdateServices implements datapath.Datapath: only the frontends of the
// Services named in changed are written, removed or left as they are;
// its cost is that of the change, whatever the number of Services. A
// change that fails is retried by the next SyncServices or
// UpdateServices. Without kube-proxy replacement it does nothing (the
// next SyncServices empties the maps). After Init, what a previous run
// left for Services never named stays until the first SyncServices: call
// that once the informers have synced.
func (d *Datapath) UpdateServices(ctx context.Context, changed map[string][]datapath.Service) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	if !d.opts.KubeProxyReplacement {
		return nil
	}
	return d.lb.update(changed)
}

// VerifyServices reads the service, backend, slot and affinity maps back
// and repairs every entry that differs from what the datapath wrote
// (someone deleted or changed an entry, a write failed unnoticed). It
// costs a walk of every map: call it rarely, not on every sync.
func (d *Datapath) VerifyServices(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ready(); err != nil {
		return err
	}
	st, err := d.lb.verify()
	if st.total() > 0 {
		d.log.Info("Repaired service maps that drifted from the written state",
			"stray-services", st.Services, "backends", st.Backends, "stray-slots", st.Slots, "frontends-rewritten", st.Frontends)
	}
	return err
}

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
