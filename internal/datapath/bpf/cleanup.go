package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/datapath/linux"
)

// progNames are the names glia's programs have in the kernel.
var progNames = map[string]bool{"from_container": true, "from_netdev": true, "to_netdev": true}

// Cleanup removes everything the eBPF datapath put on a node, in the
// network namespace of the calling thread: glia's programs on device,
// on the VXLAN device and on every pod veth (host side "gl…", and any
// interface named by a pinned link), the VXLAN device (and the routes
// through it), the NAT port range it reserved, and every pin under
// bpffsDir; the port range goes back to the value recorded in stateDir
// (the datapath's state directory) before glia changed it. glia's other routes are the legacy datapath's: its
// reconcilers keep those it wants (a route replaced keeps carrying
// traffic) and prune the rest. It is
// idempotent and succeeds when nothing is there.
//
// For a switch to the legacy datapath without dropping traffic, call it
// after the legacy datapath has installed its routes and masquerade rule:
// once the programs are gone, the stack carries the packets.
func Cleanup(log *slog.Logger, bpffsDir, stateDir, device string) error {
	log = log.With("subsys", "datapath-bpf")
	var errs []error

	// Interfaces to clean: the node's, the tunnel's, pods'.
	ifnames := map[string]bool{VXLANDevice: true}
	if device != "" {
		ifnames[device] = true
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, linux.HostIfPrefix) {
			ifnames[l.Attrs().Name] = true
		}
	}
	linksDir := filepath.Join(bpffsDir, "links")
	if ents, err := os.ReadDir(linksDir); err == nil {
		for _, e := range ents {
			if a, ok := parsePinName(e.Name()); ok {
				ifnames[a.ifname] = true
			}
		}
	}

	// Pinned links first: unpinning the last reference detaches.
	if bpffsDir != "" {
		if ents, err := os.ReadDir(linksDir); err == nil {
			for _, e := range ents {
				pin := filepath.Join(linksDir, e.Name())
				if l, err := link.LoadPinnedLink(pin, nil); err == nil {
					errs = append(errs, l.Unpin(), l.Close())
				}
			}
		}
	}
	for name := range ifnames {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			continue
		}
		n, err := detachAll(l)
		errs = append(errs, err)
		if n > 0 {
			log.Info("detached eBPF programs", "interface", name, "count", n)
		}
	}

	if l, err := netlinksafe.LinkByName(VXLANDevice); err == nil {
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("remove %s: %w", VXLANDevice, err))
		} else {
			log.Info("removed tunnel device", "device", VXLANDevice)
		}
	}

	errs = append(errs, releasePortRange(log, stateDir))

	if bpffsDir != "" {
		if err := os.RemoveAll(bpffsDir); err != nil {
			errs = append(errs, fmt.Errorf("remove pins under %s: %w", bpffsDir, err))
		}
	}
	return errors.Join(errs...)
}

// parsePinName reverses attachment.pinName.
func parsePinName(name string) (attachment, bool) {
	var a attachment
	switch {
	case strings.HasSuffix(name, "-ingress"):
		name = strings.TrimSuffix(name, "-ingress")
	case strings.HasSuffix(name, "-egress"):
		name = strings.TrimSuffix(name, "-egress")
		a.egress = true
	default:
		return a, false
	}
	for p := range progNames {
		if strings.HasPrefix(name, p+"-") {
			a.prog, a.ifname = p, strings.TrimPrefix(name, p+"-")
			return a, a.ifname != ""
		}
	}
	return a, false
}

// detachAll removes glia's programs from both hooks of l: tcx links whose
// program is one of glia's, and glia's tc filters. It returns how many.
func detachAll(l netlink.Link) (int, error) {
	var errs []error
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
		if err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("query programs on %s: %w", l.Attrs().Name, err))
			}
			continue
		}
		for _, ap := range res.Programs {
			if !isGliaProgram(ap.ID) {
				continue
			}
			id, ok := ap.LinkID()
			if !ok {
				continue
			}
			lk, err := link.NewFromID(id)
			if err != nil {
				if !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, fmt.Errorf("open link %d on %s: %w", id, l.Attrs().Name, err))
				}
				continue
			}
			if err := lk.Detach(); err != nil {
				errs = append(errs, fmt.Errorf("detach link %d on %s: %w", id, l.Attrs().Name, err))
			} else {
				n++
			}
			lk.Close()
		}
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlinksafe.FilterList(l, parent)
		if err != nil {
			continue // no clsact qdisc
		}
		for _, f := range filters {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || !strings.HasPrefix(bf.Name, "glia-") {
				continue
			}
			if err := netlink.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove tc filter %s on %s: %w", bf.Name, l.Attrs().Name, err))
			} else {
				n++
			}
		}
	}
	return n, errors.Join(errs...)
}

func isGliaProgram(id ebpf.ProgramID) bool {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false
	}
	defer p.Close()
	info, err := p.Info()
	return err == nil && progNames[info.Name]
}
