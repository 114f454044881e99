// Package cni is the glia CNI plugin (spec 1.1: ADD, CHECK, DEL, STATUS, GC,
// VERSION). It is thin: the agent owns addresses and endpoints, reached over
// its unix socket; the plugin validates its inputs, creates the pod's veth
// and configures the pod side (address, routes through a link-local gateway,
// a permanent neighbour entry for it), and undoes everything it did when a
// step fails.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/datapath/linux"
)

// PluginType is the "type" of glia's network configuration.
const PluginType = "glia-cni"

// About is printed when the plugin runs without CNI_COMMAND.
const About = "glia-cni: the glia CNI plugin (addresses and endpoints come from glia-agent)"

// MaxConfigBytes bounds the network configuration read on stdin.
const MaxConfigBytes = 256 << 10

// opTimeout bounds one plugin invocation's talk with the agent.
const opTimeout = 60 * time.Second

// Versions returns the CNI spec versions the plugin supports.
func Versions() version.PluginInfo {
	return version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
}

// Funcs returns the plugin's command implementations for skel.
func Funcs() skel.CNIFuncs {
	p := &plugin{
		log:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("subsys", "cni"),
		hostNetns: HostNetnsPath,
	}
	return skel.CNIFuncs{Add: p.cmdAdd, Check: p.cmdCheck, Del: p.cmdDel, Status: p.cmdStatus, GC: p.cmdGC}
}

// NetConf is glia's network configuration.
type NetConf struct {
	types.PluginConf
	// SocketPath is the agent's API socket (required).
	SocketPath string `json:"socketPath"`
	// MTU of the pod interface; 0 takes the agent's.
	MTU int `json:"mtu,omitempty"`
	// LegacyAttachments is the misspelt GC key some runtimes still send.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

type plugin struct {
	log       *slog.Logger
	hostNetns string // HostNetnsPath
}

func loadConf(data []byte) (*NetConf, error) {
	if len(data) > MaxConfigBytes {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("network configuration is %d bytes, more than %d", len(data), MaxConfigBytes), "")
	}
	var conf NetConf
	if err := json.Unmarshal(data, &conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network configuration", err.Error())
	}
	if conf.SocketPath == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "socketPath is required: set it to the glia agent's socket", "")
	}
	if !filepath.IsAbs(conf.SocketPath) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("socketPath %q must be absolute", conf.SocketPath), "")
	}
	if conf.MTU != 0 && (conf.MTU < 576 || conf.MTU > 65535) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("mtu %d is outside 576..65535", conf.MTU), "")
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "parse prevResult", err.Error())
	}
	return &conf, nil
}

func attachmentOf(args *skel.CmdArgs) (api.Attachment, error) {
	a := api.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	if err := api.ValidateContainerID(a.ContainerID); err != nil {
		return a, types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_CONTAINERID", err.Error())
	}
	if err := api.ValidateIfName(a.IfName); err != nil {
		return a, types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_IFNAME", err.Error())
	}
	return a, nil
}

// HostNetnsPath is the network namespace of the host's init process, which
// no pod may be given.
const HostNetnsPath = "/proc/1/ns/net"

// validateNetns checks that path names a network namespace that is neither
// the plugin's own (the node's) nor the host's (hostNetns, normally
// HostNetnsPath; when the plugin cannot read it, a path naming it fails to
// open and is refused all the same). The file is opened
// non-blocking, so a FIFO or device swapped in cannot hang the plugin, and
// every check after the open is made on the opened file.
func validateNetns(path, hostNetns string) error {
	bad := func(msg string) error {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q: %s", path, msg), "")
	}
	if path == "" {
		return bad("empty")
	}
	if !filepath.IsAbs(path) || strings.Contains(path, "..") {
		return bad("must be an absolute path without '..'")
	}
	if len(path) > unix.PathMax {
		return bad("path too long")
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return bad(err.Error())
	}
	defer unix.Close(fd)
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return bad(err.Error())
	}
	if fs.Type != unix.NSFS_MAGIC {
		return bad("not a namespace file (nsfs)")
	}
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return bad("cannot read namespace type: " + err.Error())
	}
	if typ != unix.CLONE_NEWNET {
		return bad("not a network namespace")
	}
	var target, self unix.Stat_t
	if err := unix.Fstat(fd, &target); err != nil {
		return bad(err.Error())
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return bad("cannot read the plugin's own network namespace: " + err.Error())
	}
	if target.Dev == self.Dev && target.Ino == self.Ino {
		return bad("is the plugin's own (node) network namespace")
	}
	// Without access to init's namespace (an unprivileged plugin) there
	// is nothing the plugin could do to it either.
	var host unix.Stat_t
	if err := unix.Stat(hostNetns, &host); err == nil && target.Dev == host.Dev && target.Ino == host.Ino {
		return bad("is the host's network namespace (" + hostNetns + ")")
	}
	return nil
}

// k8sArgs reads K8S_POD_NAMESPACE and K8S_POD_NAME from CNI_ARGS, ignoring
// every other key.
func k8sArgs(s string) (namespace, name string) {
	for _, kv := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			namespace = v
		case "K8S_POD_NAME":
			name = v
		}
	}
	return namespace, name
}

// agentError turns a client error into a CNI error.
func agentError(what string, err error, socket string) error {
	if errors.Is(err, api.ErrAgentUnreachable) {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: glia agent unreachable at %s: is glia-agent running on this node?", what, socket), err.Error())
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case api.CodeNotReady:
			return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: glia agent is not ready", what), ae.Message)
		case api.CodeBadRequest:
			return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("%s: %s", what, ae.Message), "")
		}
		return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %s: %s", what, ae.Code, ae.Message), "")
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %v", what, err), "")
}

func (p *plugin) cmdAdd(args *skel.CmdArgs) (retErr error) {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	att, err := attachmentOf(args)
	if err != nil {
		return err
	}
	if err := validateNetns(args.Netns, p.hostNetns); err != nil {
		return err
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open CNI_NETNS %q", args.Netns), err.Error())
	}
	defer podNS.Close()
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return types.NewError(types.ErrInternal, "open the node's network namespace", err.Error())
	}
	defer hostNS.Close()
	podNamespace, podName := k8sArgs(args.Args)

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	client := api.NewClient(conf.SocketPath)

	alloc, err := client.Allocate(ctx, api.AllocateRequest{Attachment: att, PodNamespace: podNamespace, PodName: podName})
	if err != nil {
		return agentError("allocate an address", err, conf.SocketPath)
	}
	hostName := api.HostIfName(att)
	upserted := false
	vethMade := false
	defer func() {
		if retErr == nil {
			return
		}
		// Undo in reverse order; the agent call runs on a fresh context so a
		// timeout of the failed step does not prevent it.
		uctx, ucancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ucancel()
		if vethMade {
			if err := linux.DeleteLink(hostName); err != nil {
				p.log.Warn("undo: cannot delete host veth", "hostIfName", hostName, "error", err)
			}
		}
		var uerr error
		if upserted {
			uerr = client.DeleteEndpoint(uctx, att)
		} else {
			uerr = client.Release(uctx, att)
		}
		if uerr != nil {
			p.log.Warn("undo: cannot release the attachment's address; the agent collects it later", "attachment", att.Key(), "error", uerr)
		}
	}()

	addr, err := netip.ParseAddr(alloc.IP)
	if err != nil || !addr.Is4() {
		return types.NewError(types.ErrInternal, fmt.Sprintf("agent returned a bad address %q", alloc.IP), "")
	}
	gw, err := netip.ParseAddr(alloc.Gateway)
	if err != nil || !gw.Is4() {
		return types.NewError(types.ErrInternal, fmt.Sprintf("agent returned a bad gateway %q", alloc.Gateway), "")
	}
	mtu := alloc.MTU
	if conf.MTU != 0 {
		mtu = conf.MTU
	}

	// No endpoint exists for this attachment (the agent would have refused
	// the allocation), so a host veth under its name is a leftover of an
	// interrupted ADD.
	if err := ip.DelLinkByName(hostName); err == nil {
		p.log.Warn("removed a leftover host veth of an interrupted ADD", "hostIfName", hostName)
	} else if !errors.Is(err, ip.ErrLinkNotFound) {
		return types.NewError(types.ErrInternal, "remove leftover host veth", err.Error())
	}

	var hostIf, podIf net.Interface
	err = podNS.Do(func(hostNS ns.NetNS) error {
		if _, err := netlinksafe.LinkByName(args.IfName); err == nil {
			return fmt.Errorf("interface %q already exists in %s", args.IfName, args.Netns)
		}
		var err error
		hostIf, podIf, err = ip.SetupVethWithName(args.IfName, hostName, mtu, "", hostNS)
		return err
	})
	if err != nil {
		return types.NewError(types.ErrInternal, "create the pod's veth", err.Error())
	}
	vethMade = true

	err = podNS.Do(func(ns.NetNS) error {
		_, err := linux.ConfigurePodInterface(args.IfName, addr, gw, 0, hostIf.HardwareAddr)
		return err
	})
	if err != nil {
		return types.NewError(types.ErrInternal, "configure the pod's interface", err.Error())
	}

	ep := api.Endpoint{
		Attachment:   att,
		IP:           addr.String(),
		Netns:        args.Netns,
		HostIfName:   hostName,
		HostIfIndex:  hostIf.Index,
		HostMAC:      hostIf.HardwareAddr.String(),
		PodMAC:       podIf.HardwareAddr.String(),
		PodNamespace: podNamespace,
		PodName:      podName,
	}
	upserted = true // from here on, undo deletes the endpoint, whatever the answer was
	if err := client.UpsertEndpoint(ctx, ep); err != nil {
		return agentError("register the endpoint", err, conf.SocketPath)
	}

	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostName, Mac: hostIf.HardwareAddr.String()},
			{Name: args.IfName, Mac: podIf.HardwareAddr.String(), Sandbox: args.Netns},
		},
		IPs: []*current.IPConfig{{
			Interface: current.Int(1),
			Address:   net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Gateway:   gw.AsSlice(),
		}},
		Routes: []*types.Route{
			{Dst: net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: intPtr(int(netlink.SCOPE_LINK))},
			{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw.AsSlice()},
		},
	}
	if err := types.PrintResult(result, conf.CNIVersion); err != nil {
		return types.NewError(types.ErrIOFailure, "print result", err.Error())
	}
	return nil
}

func intPtr(i int) *int { return &i }

func (p *plugin) cmdDel(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	att, err := attachmentOf(args)
	if err != nil {
		return err
	}
	hostName := api.HostIfName(att)

	// The pod side first, when its namespace is still there: deleting a
	// veth end removes both, and this also covers a pod side whose host
	// side is already gone.
	if args.Netns != "" && validateNetns(args.Netns, p.hostNetns) == nil {
		err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
			link, err := netlinksafe.LinkByName(args.IfName)
			if err != nil {
				return nil // gone already
			}
			if _, ok := link.(*netlink.Veth); !ok {
				return nil // not ours
			}
			return netlink.LinkDel(link)
		})
		if err != nil {
			return types.NewError(types.ErrInternal, "delete the pod's interface", err.Error())
		}
	}
	if err := linux.DeleteLink(hostName); err != nil {
		return types.NewError(types.ErrInternal, "delete the host veth", err.Error())
	}

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := api.NewClient(conf.SocketPath).DeleteEndpoint(ctx, att); err != nil {
		if errors.Is(err, api.ErrAgentUnreachable) {
			// The veth is gone: the agent deletes an endpoint whose veth
			// is gone when it restores, and every endpoint-gc period
			// once it runs (SweepGone).
			p.log.Warn("agent unreachable during DEL; the veth is removed and the agent deletes the endpoint once it is ready (within its endpoint-gc period)",
				"attachment", att.Key(), "socket", conf.SocketPath)
			return nil
		}
		return agentError("delete the endpoint", err, conf.SocketPath)
	}
	return nil
}

func (p *plugin) cmdCheck(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult in the network configuration", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "convert prevResult", err.Error())
	}
	att, err := attachmentOf(args)
	if err != nil {
		return err
	}
	if err := validateNetns(args.Netns, p.hostNetns); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	ep, err := api.NewClient(conf.SocketPath).GetEndpoint(ctx, att)
	if err != nil {
		return agentError("look up the endpoint", err, conf.SocketPath)
	}
	addr, err := netip.ParseAddr(ep.IP)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("agent endpoint has a bad address %q", ep.IP), "")
	}
	found := false
	for _, ipc := range prev.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap() == addr {
			found = true
		}
	}
	if !found {
		return types.NewError(types.ErrInternal, fmt.Sprintf("prevResult does not list the endpoint's address %s", addr), "")
	}

	hostLink, err := netlinksafe.LinkByName(ep.HostIfName)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("host veth %s", ep.HostIfName), err.Error())
	}
	if hostLink.Attrs().Flags&net.FlagUp == 0 {
		return types.NewError(types.ErrInternal, fmt.Sprintf("host veth %s is down", ep.HostIfName), "")
	}
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		return checkPod(args.IfName, addr, hostLink.Attrs().HardwareAddr)
	})
	if err != nil {
		return types.NewError(types.ErrInternal, "check the pod's interface", err.Error())
	}
	return nil
}

func checkPod(ifName string, addr netip.Addr, hostMAC net.HardwareAddr) error {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("interface %s: %w", ifName, err)
	}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", ifName, err)
	}
	hasAddr := false
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == addr {
			hasAddr = true
		}
	}
	if !hasAddr {
		return fmt.Errorf("%s does not have %s", ifName, addr)
	}
	routes, err := netlinksafe.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("routes of %s: %w", ifName, err)
	}
	var gw net.IP
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && maskBits(r.Dst) == 0) && r.Gw != nil {
			gw = r.Gw
		}
	}
	if gw == nil {
		return fmt.Errorf("no default route on %s", ifName)
	}
	// The gateway is link-local and reachable only through its own
	// scope-link route.
	hasGwRoute := false
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.Equal(gw) && maskBits(r.Dst) == 32 && r.Gw == nil && r.Scope == netlink.SCOPE_LINK {
			hasGwRoute = true
		}
	}
	if !hasGwRoute {
		return fmt.Errorf("no route to the gateway %s on %s", gw, ifName)
	}
	neighs, err := linux.NeighList(link.Attrs().Index)
	if err != nil {
		return fmt.Errorf("neighbours of %s: %w", ifName, err)
	}
	for _, n := range neighs {
		if n.IP.Equal(gw) && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == hostMAC.String() {
			return nil
		}
	}
	return fmt.Errorf("no permanent neighbour entry %s -> %s on %s", gw, hostMAC, ifName)
}

func maskBits(n *net.IPNet) int {
	ones, _ := n.Mask.Size()
	return ones
}

func (p *plugin) cmdStatus(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = api.NewClient(conf.SocketPath).CNIStatus(ctx)
	if err == nil {
		return nil
	}
	if errors.Is(err, api.ErrAgentUnreachable) {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("glia agent unreachable at %s: is glia-agent running on this node?", conf.SocketPath), err.Error())
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case api.CodeExhausted:
			return types.NewError(types.ErrPluginNotAvailable, "pod address exhaustion: no pod address is left on this node", ae.Message)
		case api.CodeNotReady:
			return types.NewError(types.ErrPluginNotAvailable, "glia agent is not ready", ae.Message)
		}
	}
	return types.NewError(types.ErrInternal, "agent status", err.Error())
}

func (p *plugin) cmdGC(args *skel.CmdArgs) error {
	conf, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := conf.ValidAttachments
	if valid == nil {
		valid = conf.LegacyAttachments
	}
	if valid == nil {
		// Without the list, every pod of the node would look stale.
		return types.NewError(types.ErrInvalidNetworkConfig, "GC needs cni.dev/valid-attachments", "")
	}
	req := api.GCRequest{Valid: make([]api.Attachment, 0, len(valid))}
	for _, a := range valid {
		req.Valid = append(req.Valid, api.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	res, err := api.NewClient(conf.SocketPath).GC(ctx, req)
	if err != nil {
		return agentError("gc", err, conf.SocketPath)
	}
	// The veths of released attachments go too.
	for _, a := range res.Released {
		if err := linux.DeleteLink(api.HostIfName(a)); err != nil {
			p.log.Warn("gc: cannot delete host veth", "attachment", a.Key(), "error", err)
		}
	}
	return nil
}
