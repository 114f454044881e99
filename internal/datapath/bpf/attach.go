package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"glia.dev/glia/internal/state"
)

// attachment names one program on one interface hook; its pinned link is
// linksDir/<prog>-<ifname>-<dir>.
type attachment struct {
	prog    string // from_container, from_netdev, to_netdev
	ifname  string
	ifindex int
	egress  bool
}

func (a attachment) pinName() string {
	dir := "ingress"
	if a.egress {
		dir = "egress"
	}
	return a.prog + "-" + a.ifname + "-" + dir
}

// FaultKillAfterAttach is a fault-injection environment variable, set
// only by tests (TestPrivilegedAttachKilledBeforePin): when it names an
// attachment's pin (<prog>-<ifname>-<ingress|egress>), the process kills
// itself with SIGKILL right after attaching that program and before
// pinning its link or program — the one window in which a kill loses a
// first attach (the kernel detaches a TCX link whose last descriptor
// closes unpinned). A restart attaches it again: attach is idempotent
// across such a kill (a missing pin means "attach"; a tc filter is
// replaced in place).
const FaultKillAfterAttach = "GLIA_TEST_KILL_AFTER_ATTACH"

func faultAfterAttach(a attachment) {
	if v := os.Getenv(FaultKillAfterAttach); v == "" || v != a.pinName() {
		return
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	time.Sleep(time.Minute) // SIGKILL ends the process before this does
}

// tc fallback filter identity: one filter per hook, always at this
// priority and handle, so a new program replaces the old in place.
const (
	tcPriority = 1
	tcHandle   = 0x1
)

// attachProgram attaches one of the device programs a state.Program names
// and says whether it had to (it was missing, or on another interface).
func (d *Datapath) attachProgram(p *state.Program) (bool, error) {
	l, err := netlinksafe.LinkByName(p.Interface)
	if err != nil {
		return false, fmt.Errorf("program %s: %w", p.Name(), err)
	}
	a := attachment{prog: p.Program, ifname: p.Interface, ifindex: l.Attrs().Index, egress: p.Egress}
	attached, err := d.attached(a)
	if err != nil {
		return false, err
	}
	return !attached, d.attach(a, d.program(p.Program))
}

// attached says whether a's program is on its hook now: its pinned link
// (tcx) is attached to a's interface, or glia's tc filter is there.
func (d *Datapath) attached(a attachment) (bool, error) {
	if d.tcx {
		l, err := link.LoadPinnedLink(filepath.Join(d.linksDir, a.pinName()), nil)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("open pinned link %s: %w", a.pinName(), err)
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			return false, fmt.Errorf("pinned link %s: %w", a.pinName(), err)
		}
		// A link whose interface is gone reports no TCX info.
		return info.TCX() != nil && int(info.TCX().Ifindex) == a.ifindex, nil
	}
	filters, err := netlinksafe.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: a.ifindex}}, tcParent(a.egress))
	if err != nil {
		return false, nil // no clsact qdisc: nothing attached
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == "glia-"+a.prog && bf.Priority == tcPriority {
			return true, nil
		}
	}
	return false, nil
}

// attach puts prog on a hook so that it survives the agent: a pinned TCX
// link (replaced in place with link.Update when it exists, so the hook
// never runs without a program), or a tc filter replaced in place.
func (d *Datapath) attach(a attachment, prog *ebpf.Program) error {
	if d.tcx {
		return d.attachTCX(a, prog)
	}
	if err := attachTC(a, prog); err != nil {
		return err
	}
	faultAfterAttach(a)
	// tc filters live on the qdisc, not in bpffs; pin the program under
	// the same name anyway so that stale attachments can be found.
	pin := filepath.Join(d.linksDir, a.pinName())
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace pinned program %s: %w", a.pinName(), err)
	}
	// Pin a clone: pinning the same *ebpf.Program twice moves its pin.
	clone, err := prog.Clone()
	if err != nil {
		return fmt.Errorf("pin program %s: %w", a.pinName(), err)
	}
	defer clone.Close()
	if err := clone.Pin(pin); err != nil {
		return fmt.Errorf("pin program %s: %w", a.pinName(), err)
	}
	return nil
}

func (d *Datapath) attachTCX(a attachment, prog *ebpf.Program) error {
	pin := filepath.Join(d.linksDir, a.pinName())
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == a.ifindex {
			err := l.Update(prog)
			l.Close()
			if err == nil {
				return nil
			}
			return fmt.Errorf("replace program on %s: %w", a.pinName(), err)
		}
		// The interface it was attached to is gone (or was recreated).
		d.log.Info("removing stale program link", "link", a.pinName())
		l.Unpin()
		l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open pinned link %s: %w", a.pinName(), err)
	}
	at := ebpf.AttachTCXIngress
	if a.egress {
		at = ebpf.AttachTCXEgress
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: a.ifindex, Program: prog, Attach: at})
	if err != nil {
		return fmt.Errorf("attach %s: %w", a.pinName(), err)
	}
	defer l.Close()
	faultAfterAttach(a)
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin link %s: %w", a.pinName(), err)
	}
	return nil
}

// detach removes what attach installed; a missing attachment is fine.
func (d *Datapath) detach(a attachment) error {
	pin := filepath.Join(d.linksDir, a.pinName())
	if !d.tcx {
		if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove pinned program %s: %w", a.pinName(), err)
		}
		if a.ifindex == 0 {
			return nil // the interface is gone, and its filters with it
		}
		return detachTC(a)
	}
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		err := l.Unpin()
		return errors.Join(err, l.Close()) // the last reference: detached
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("open pinned link %s: %w", a.pinName(), err)
	}
	return nil
}

// pinnedLinks lists pinned links whose program is prog.
func (d *Datapath) pinnedLinks(prog string) ([]string, error) {
	ents, err := os.ReadDir(d.linksDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list pinned links: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prog+"-") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func tcParent(egress bool) uint32 {
	if egress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

func attachTC(a attachment, prog *ebpf.Program) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: a.ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("clsact qdisc on %s: %w", a.ifname, err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: a.ifindex, Parent: tcParent(a.egress), Handle: tcHandle,
			Priority: tcPriority, Protocol: unix.ETH_P_ALL,
		},
		Fd: prog.FD(), Name: "glia-" + a.prog, DirectAction: true,
	}
	if err := netlink.FilterReplace(filter); err != nil {
		return fmt.Errorf("tc filter %s: %w", a.pinName(), err)
	}
	return nil
}

func detachTC(a attachment) error {
	filter := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{
		LinkIndex: a.ifindex, Parent: tcParent(a.egress), Handle: tcHandle,
		Priority: tcPriority, Protocol: unix.ETH_P_ALL,
	}}
	if err := netlink.FilterDel(filter); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("remove tc filter %s: %w", a.pinName(), err)
	}
	return nil
}
