package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/datapath/linux"
	"glia.dev/glia/internal/netnsfile"
	"glia.dev/glia/internal/state"
)

// Fixed names of the health endpoint.
const (
	// EndpointContainerID and EndpointIfName form the endpoint's attachment.
	EndpointContainerID = "glia-health"
	EndpointIfName      = "eth0"
	// EndpointHostIfName is the host side of the endpoint's veth. It does
	// not follow api.HostIfName: the agent must not take it for an orphaned
	// pod veth.
	EndpointHostIfName = "glhealth0"
	// NetnsFileName is the bind mount of the endpoint's network namespace
	// in the state directory.
	NetnsFileName = "health.netns"
)

// DefaultGateway is the link-local next hop of the endpoint, as for pods.
var DefaultGateway = linux.PodGateway

// ErrClosed is returned by Endpoint.Serve after Close.
var ErrClosed = errors.New("health endpoint is closed")

// EndpointConfig describes the node's health endpoint.
type EndpointConfig struct {
	// StateDir is the agent's per-node state directory; the namespace is
	// bind-mounted at StateDir/health.netns.
	StateDir string
	NodeName string
	// IP is the endpoint's address, ipam.RouterIP of the node's pod CIDR.
	IP netip.Addr
	// Gateway defaults to DefaultGateway.
	Gateway netip.Addr
	// MTU of both sides of the veth; default 1500.
	MTU int
	// Port the endpoint serves /hello on; default DefaultPort.
	Port int
}

func (c EndpointConfig) withDefaults() EndpointConfig {
	if !c.Gateway.IsValid() {
		c.Gateway = DefaultGateway
	}
	if c.MTU == 0 {
		c.MTU = 1500
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	return c
}

// Validate checks the config after defaults are applied.
func (c EndpointConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.StateDir == "" || !filepath.IsAbs(c.StateDir):
		return fmt.Errorf("health endpoint: state dir %q must be an absolute path", c.StateDir)
	case c.NodeName == "":
		return errors.New("health endpoint: node name is empty")
	case !c.IP.Is4() || c.IP.IsUnspecified():
		return fmt.Errorf("health endpoint: address %v must be an IPv4 unicast address", c.IP)
	case !c.Gateway.Is4():
		return fmt.Errorf("health endpoint: gateway %v must be an IPv4 address", c.Gateway)
	case c.MTU < 576 || c.MTU > 65535:
		return fmt.Errorf("health endpoint: mtu %d is outside 576..65535", c.MTU)
	case c.Port < 1 || c.Port > 65535:
		return fmt.Errorf("health endpoint: port %d is outside 1..65535", c.Port)
	}
	return nil
}

// Endpoint is the node's health endpoint: a network namespace with a veth
// to the node, configured as the CNI plugin configures a pod.
type Endpoint struct {
	log    *slog.Logger
	cfg    EndpointConfig
	nsPath string
	ep     *state.Endpoint

	mu      sync.Mutex
	closed  bool
	cancels map[*context.CancelFunc]struct{}
	serving sync.WaitGroup
}

// SetupEndpoint creates the health endpoint, or re-uses and repairs the one
// a previous agent left: the namespace bind-mounted at
// StateDir/health.netns, the veth glhealth0 (in the caller's network
// namespace, the node's) ↔ eth0 (in the endpoint's namespace) with IP/32,
// a route to the gateway, a default route through it and a permanent
// neighbour entry gateway → glhealth0's MAC. Nothing that is already right
// is touched, so an agent restart does not flap the endpoint. The caller
// programs the datapath for the returned Endpoint.API() as for a pod (route
// IP/32 to glhealth0).
func SetupEndpoint(log *slog.Logger, cfg EndpointConfig) (*Endpoint, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("subsys", "health-endpoint")
	nsPath := filepath.Join(cfg.StateDir, NetnsFileName)
	created, err := ensureNetns(nsPath)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created the health endpoint's network namespace", "netns", nsPath)
	}
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("open the node's network namespace: %w", err)
	}
	defer hostNS.Close()
	healthNS, err := ns.GetNS(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open the health namespace %s: %w", nsPath, err)
	}
	defer healthNS.Close()

	hostLink, err := currentVeth(healthNS)
	if err != nil {
		return nil, err
	}
	if hostLink == nil {
		err := healthNS.Do(func(hostNS ns.NetNS) error {
			if l, err := netlinksafe.LinkByName(EndpointIfName); err == nil {
				if err := netlink.LinkDel(l); err != nil {
					return fmt.Errorf("delete stale %s: %w", EndpointIfName, err)
				}
			}
			_, _, err := ip.SetupVethWithName(EndpointIfName, EndpointHostIfName, cfg.MTU, "", hostNS)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("create the health endpoint's veth: %w", err)
		}
		log.Info("created the health endpoint's veth", "hostIfName", EndpointHostIfName, "ip", cfg.IP)
		if hostLink, err = netlinksafe.LinkByName(EndpointHostIfName); err != nil {
			return nil, fmt.Errorf("look up %s: %w", EndpointHostIfName, err)
		}
	}
	if hostLink.Attrs().MTU != cfg.MTU {
		if err := netlink.LinkSetMTU(hostLink, cfg.MTU); err != nil {
			return nil, fmt.Errorf("set mtu of %s: %w", EndpointHostIfName, err)
		}
	}
	if hostLink.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(hostLink); err != nil {
			return nil, fmt.Errorf("set %s up: %w", EndpointHostIfName, err)
		}
	}
	hostMAC := hostLink.Attrs().HardwareAddr
	var podMAC net.HardwareAddr
	err = healthNS.Do(func(ns.NetNS) error {
		var err error
		podMAC, err = linux.ConfigurePodInterface(EndpointIfName, cfg.IP, cfg.Gateway, cfg.MTU, hostMAC)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("configure the health endpoint: %w", err)
	}
	return &Endpoint{
		log:    log,
		cfg:    cfg,
		nsPath: nsPath,
		ep: &state.Endpoint{
			Attachment:  state.Attachment{ContainerID: EndpointContainerID, IfName: EndpointIfName},
			IP:          cfg.IP,
			Netns:       nsPath,
			HostIfName:  EndpointHostIfName,
			HostIfIndex: hostLink.Attrs().Index,
			HostMAC:     hostMAC,
			PodMAC:      podMAC,
		},
		cancels: map[*context.CancelFunc]struct{}{},
	}, nil
}

// currentVeth returns glhealth0 when it is one end of a veth whose other
// end is eth0 in healthNS. Anything else named glhealth0 is deleted and nil
// returned.
func currentVeth(healthNS ns.NetNS) (netlink.Link, error) {
	hostLink, err := netlinksafe.LinkByName(EndpointHostIfName)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up %s: %w", EndpointHostIfName, err)
	}
	ok := false
	if _, isVeth := hostLink.(*netlink.Veth); isVeth {
		err := healthNS.Do(func(ns.NetNS) error {
			pod, err := netlinksafe.LinkByName(EndpointIfName)
			if err != nil {
				return nil
			}
			if _, isVeth := pod.(*netlink.Veth); !isVeth {
				return nil
			}
			ok = pod.Attrs().ParentIndex == hostLink.Attrs().Index &&
				hostLink.Attrs().ParentIndex == pod.Attrs().Index
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("inspect the health namespace: %w", err)
		}
		// Interface indexes are per namespace: also check that the peer
		// lives in the health namespace, when the kernel tells.
		if ok && hostLink.Attrs().NetNsID >= 0 {
			if id, err := netlink.GetNetNsIdByFd(int(healthNS.Fd())); err == nil && id >= 0 && id != hostLink.Attrs().NetNsID {
				ok = false
			}
		}
	}
	if ok {
		return hostLink, nil
	}
	if err := netlink.LinkDel(hostLink); err != nil {
		return nil, fmt.Errorf("delete stale %s: %w", EndpointHostIfName, err)
	}
	return nil, nil
}

// ensureNetns makes path the bind mount of a network namespace, creating
// the namespace when path is not one already. It reports whether it
// created one.
func ensureNetns(path string) (bool, error) {
	switch err := checkNetnsMount(path); {
	case err == nil:
		return false, nil
	case !errors.Is(err, errNotMounted):
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	// A plain file left where the namespace was (a crash between creating
	// the file and binding it) is not a namespace: replace it.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("remove stale %s: %w", path, err)
	}
	if err := netnsfile.Create(path); err != nil {
		return false, err
	}
	return true, nil
}

var errNotMounted = errors.New("not a namespace mount")

// checkNetnsMount returns nil when path is a network namespace file,
// errNotMounted when it is missing or a plain file, another error otherwise.
func checkNetnsMount(path string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return errNotMounted
		}
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return errNotMounted
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("namespace type of %s: %w", path, err)
	}
	if typ != unix.CLONE_NEWNET {
		return fmt.Errorf("%s is a namespace but not a network namespace", path)
	}
	return nil
}

// State returns the endpoint as the agent programs it, like a pod's.
func (e *Endpoint) State() *state.Endpoint { return e.ep }

// IP returns the endpoint's address.
func (e *Endpoint) IP() netip.Addr { return e.cfg.IP }

// NetnsPath returns the path of the endpoint's namespace.
func (e *Endpoint) NetnsPath() string { return e.nsPath }

// Serve answers GET /hello on IP:Port from inside the endpoint's namespace
// until ctx is done or Close is called; it returns nil then. It may be
// called again after it returned.
func (e *Endpoint) Serve(ctx context.Context) error {
	wait, err := e.start(ctx)
	if err != nil {
		return err
	}
	return wait()
}

// Start is Serve in the background: it returns once the endpoint listens
// (or could not), and serves until ctx is done or Close is called. A
// serving error after the start is logged.
func (e *Endpoint) Start(ctx context.Context) error {
	wait, err := e.start(ctx)
	if err != nil {
		return err
	}
	go func() {
		if err := wait(); err != nil {
			e.log.Error("health endpoint stopped serving", "error", err)
		}
	}()
	return nil
}

func (e *Endpoint) start(ctx context.Context) (wait func() error, err error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	key := &cancel
	e.cancels[key] = struct{}{}
	e.serving.Add(1)
	e.mu.Unlock()
	finish := func() {
		cancel()
		e.mu.Lock()
		delete(e.cancels, key)
		e.mu.Unlock()
		e.serving.Done()
	}

	addr := netip.AddrPortFrom(e.cfg.IP, uint16(e.cfg.Port)).String()
	var ln net.Listener
	err = ns.WithNetNSPath(e.nsPath, func(ns.NetNS) error {
		var lc net.ListenConfig
		var err error
		// The socket is created in the health namespace and stays there.
		ln, err = lc.Listen(ctx, "tcp4", addr)
		return err
	})
	if err != nil {
		finish()
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, e.nsPath, err)
	}
	return func() error {
		defer finish()
		return Serve(ctx, ln, HelloHandler(e.cfg.NodeName))
	}, nil
}

// Close stops every Serve and waits for them to return. The namespace and
// the veth stay: the next agent re-uses them without the endpoint going
// down.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	e.closed = true
	for c := range e.cancels {
		(*c)()
	}
	e.mu.Unlock()
	e.serving.Wait()
	return nil
}

// Remove closes the endpoint and deletes its veth and namespace.
func (e *Endpoint) Remove() error {
	e.Close()
	return RemoveEndpoint(e.cfg.StateDir)
}

// RemoveEndpoint deletes the health endpoint kept under stateDir, if any:
// the veth glhealth0 in the caller's network namespace and the namespace
// mount. It succeeds when there is nothing to remove.
func RemoveEndpoint(stateDir string) error {
	var errs []error
	if err := ip.DelLinkByName(EndpointHostIfName); err != nil && !errors.Is(err, ip.ErrLinkNotFound) {
		errs = append(errs, fmt.Errorf("delete %s: %w", EndpointHostIfName, err))
	}
	if err := netnsfile.Remove(filepath.Join(stateDir, NetnsFileName)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
