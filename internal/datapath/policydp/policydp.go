// Package policydp is network policy's part of the datapath, the same for
// both datapaths (beside them, like package linux): the policy maps of
// bpf/lib/policy.h, pinned in a directory of their own so that they
// outlive the agent and a switch between datapaths; the to_container
// program on every pod interface's egress; on the legacy datapath, which
// has no programs of its own, the pod's egress policy (pol_from_ctr) and
// the device's deferred Service egress (pol_to_netdev). The eBPF
// datapath's programs share the maps (Maps) and decide egress and, with
// BPF host routing, ingress themselves.
//
// It reconciles the ip-identities, policy-entries and endpoint-policies
// tables (package state) into glia_ipcache, glia_policy and
// glia_ep_policy, and puts the programs on each endpoint's interface.
// Every change of the maps bumps glia_policy_state's revision, after
// which every tracked flow is decided again by its next packet.
package policydp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Map names, as in bpf/lib/policy.h.
const (
	MapIPCache = "glia_ipcache"
	MapPolicy  = "glia_policy"
	MapEP      = "glia_ep_policy"
	MapCT      = "glia_policy_ct"
	MapState   = "glia_policy_state"
	MapDrops   = "glia_policy_drops"
)

// Program names, as in bpf/.
const (
	ProgToContainer = "to_container"
	ProgFromCtr     = "pol_from_ctr"
	ProgToNetdev    = "pol_to_netdev"
)

// Flags of glia_policy_state.
const flagReady = 1 << 0

// ipcFlagNode is IPC_F_NODE.
const ipcFlagNode = 1 << 0

// Config configures the unit.
type Config struct {
	// PinDir is where the maps and links are pinned (a directory under
	// bpffs of its own: the eBPF datapath's cleanup spares it).
	PinDir string
	// Legacy says the node runs the legacy datapath: the unit then puts
	// the pod egress and device programs on too.
	Legacy bool
	// Device is the node's device (the legacy datapath's device program).
	Device string
	// ServiceCIDR is the Service range: egress to it waits for
	// kube-proxy's translation.
	ServiceCIDR netip.Prefix
	// TCX attaches with tcx links; without, with tc filters.
	TCX bool
	// MapMax sizes glia_ipcache, glia_policy and glia_ep_policy (0: as
	// compiled, 65536).
	MapMax int
}

// Unit is the policy datapath of one node.
type Unit struct {
	log      *slog.Logger
	cfg      Config
	linksDir string

	mu    sync.Mutex // the maps' revision, and attachments
	maps  map[string]*ebpf.Map
	progs map[string]*ebpf.Program
}

// New returns the unit; it touches nothing until Init.
func New(log *slog.Logger, cfg Config) (*Unit, error) {
	if cfg.PinDir == "" {
		return nil, errors.New("policy datapath: no pin directory")
	}
	return &Unit{log: log.With("subsys", "policy-datapath"), cfg: cfg, linksDir: filepath.Join(cfg.PinDir, "links")}, nil
}

// MaxEntries is the size of the sized maps.
func (u *Unit) MaxEntries() int {
	if u.cfg.MapMax > 0 {
		return u.cfg.MapMax
	}
	return 65536
}

// Init opens the pinned maps (creating them the first time), records the
// Service range, loads the programs and puts the node-level one where
// the datapath needs it.
func (u *Unit) Init() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	spec, err := LoadToContainer()
	if err != nil {
		return fmt.Errorf("load to_container spec: %w", err)
	}
	if u.maps, err = openMaps(u.log, spec, u.cfg.PinDir, u.cfg.MapMax); err != nil {
		return err
	}
	if err := u.setState(func(s *ToContainerPolicyState) {
		s.SvcNet, s.SvcMask = 0, 0
		if p := u.cfg.ServiceCIDR; p.Addr().Is4() {
			a := p.Masked().Addr().As4()
			m := netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), p.Bits()).Masked().Addr().As4()
			s.SvcNet, s.SvcMask = binary.NativeEndian.Uint32(a[:]), binary.NativeEndian.Uint32(m[:])
		}
	}); err != nil {
		return err
	}
	u.progs = map[string]*ebpf.Program{}
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){
		ProgToContainer: LoadToContainer, ProgFromCtr: LoadPolFromCtr, ProgToNetdev: LoadPolToNetdev,
	} {
		s, err := load()
		if err != nil {
			return fmt.Errorf("load %s spec: %w", name, err)
		}
		repl := map[string]*ebpf.Map{}
		for mn := range s.Maps {
			if m, ok := u.maps[mn]; ok {
				repl[mn] = m
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			var verr *ebpf.VerifierError
			if errors.As(err, &verr) {
				return fmt.Errorf("load %s: %w\nverifier log:\n%+v", name, err, verr)
			}
			return fmt.Errorf("load %s: %w", name, err)
		}
		u.progs[name] = coll.DetachProgram(name)
		coll.Close()
		if u.progs[name] == nil {
			return fmt.Errorf("object %s has no program %s", name, name)
		}
	}
	if err := os.MkdirAll(u.linksDir, 0o700); err != nil {
		return fmt.Errorf("create link pin directory: %w", err)
	}
	if u.cfg.Device != "" {
		dev, err := netlinksafe.LinkByName(u.cfg.Device)
		if err != nil {
			return fmt.Errorf("node device %s: %w", u.cfg.Device, err)
		}
		a := attachment{prog: ProgToNetdev, ifname: u.cfg.Device, ifindex: dev.Attrs().Index, egress: true}
		if u.cfg.Legacy {
			if err := u.attach(a); err != nil {
				return err
			}
		} else if err := u.detach(a); err != nil {
			return err
		}
	}
	return nil
}

// Maps are the policy maps, for the eBPF datapath's programs.
func (u *Unit) Maps() map[string]*ebpf.Map {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.maps
}

// Ready reports whether the node enforces policy (the agent computed and
// wrote it once, in this run or an earlier one).
func (u *Unit) Ready() (bool, error) {
	s, err := u.state()
	return s.Flags&flagReady != 0, err
}

// SetReady turns enforcement on: call it once the maps hold the node's
// computed policy. It stays on (pinned) across restarts.
func (u *Unit) SetReady() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.setState(func(s *ToContainerPolicyState) { s.Flags |= flagReady; s.Revision++ })
}

// Drops returns the packets the policy denied: ingress, egress.
func (u *Unit) Drops() (ingress, egress uint64, err error) {
	m := u.Maps()[MapDrops]
	if m == nil {
		return 0, 0, errors.New("policy maps not open")
	}
	for i, out := range []*uint64{&ingress, &egress} {
		var per []ToContainerPolicyCount
		if err := m.Lookup(uint32(i), &per); err != nil {
			return 0, 0, fmt.Errorf("read %s: %w", MapDrops, err)
		}
		for _, c := range per {
			*out += c.Packets
		}
	}
	return ingress, egress, nil
}

func (u *Unit) state() (ToContainerPolicyState, error) {
	var s ToContainerPolicyState
	m := u.Maps()[MapState]
	if m == nil {
		return s, errors.New("policy maps not open")
	}
	if err := m.Lookup(uint32(0), &s); err != nil {
		return s, fmt.Errorf("read %s: %w", MapState, err)
	}
	return s, nil
}

// setState changes glia_policy_state (u.mu held).
func (u *Unit) setState(f func(*ToContainerPolicyState)) error {
	m := u.maps[MapState]
	var s ToContainerPolicyState
	if err := m.Lookup(uint32(0), &s); err != nil {
		return fmt.Errorf("read %s: %w", MapState, err)
	}
	f(&s)
	if err := m.Update(uint32(0), &s, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write %s: %w", MapState, err)
	}
	return nil
}

// bump has every tracked flow decided again (u.mu held).
func (u *Unit) bump() error {
	return u.setState(func(s *ToContainerPolicyState) { s.Revision++ })
}

// Close releases file descriptors; maps and links stay pinned.
func (u *Unit) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	var errs []error
	for _, p := range u.progs {
		errs = append(errs, p.Close())
	}
	for _, m := range u.maps {
		errs = append(errs, m.Close())
	}
	u.progs, u.maps = nil, nil
	return errors.Join(errs...)
}

// openMaps creates the policy maps, or re-uses those pinned in dir; a
// pinned map of another definition is replaced (and its entries lost:
// they are written again from the computed policy).
func openMaps(log *slog.Logger, spec *ebpf.CollectionSpec, dir string, max int) (map[string]*ebpf.Map, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create policy pin directory: %w", err)
	}
	out := map[string]*ebpf.Map{}
	fail := func(err error) (map[string]*ebpf.Map, error) {
		for _, m := range out {
			m.Close()
		}
		return nil, err
	}
	for _, name := range []string{MapIPCache, MapPolicy, MapEP, MapCT, MapState, MapDrops} {
		ms, ok := spec.Maps[name]
		if !ok {
			return fail(fmt.Errorf("object has no map %s", name))
		}
		ms = ms.Copy()
		ms.Pinning = ebpf.PinNone
		if max > 0 && (name == MapIPCache || name == MapPolicy || name == MapEP) {
			ms.MaxEntries = uint32(max)
		}
		path := filepath.Join(dir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		switch {
		case err == nil:
			if cerr := ms.Compatible(m); cerr == nil {
				out[name] = m
				continue
			} else {
				log.Warn("Replacing a pinned policy map of another definition; it is written again from the computed policy",
					"map", name, "reason", cerr)
			}
			m.Close()
			if err := os.Remove(path); err != nil {
				return fail(fmt.Errorf("remove pinned map %s: %w", name, err))
			}
		case !errors.Is(err, os.ErrNotExist):
			return fail(fmt.Errorf("open pinned map %s: %w", name, err))
		}
		m, err = ebpf.NewMap(ms)
		if err != nil {
			return fail(fmt.Errorf("create map %s: %w", name, err))
		}
		if err := m.Pin(path); err != nil {
			m.Close()
			return fail(fmt.Errorf("pin map %s: %w", name, err))
		}
		out[name] = m
	}
	return out, nil
}

// attachment is one program on one hook; its link is pinned as
// linksDir/<prog>-<ifname>-<ingress|egress>.
type attachment struct {
	prog    string
	ifname  string
	ifindex int
	egress  bool
}

func (a attachment) pinName() string {
	if a.egress {
		return a.prog + "-" + a.ifname + "-egress"
	}
	return a.prog + "-" + a.ifname + "-ingress"
}

func parsePin(name string) (attachment, bool) {
	var a attachment
	rest, ok := strings.CutSuffix(name, "-egress")
	if ok {
		a.egress = true
	} else if rest, ok = strings.CutSuffix(name, "-ingress"); !ok {
		return a, false
	}
	for _, p := range []string{ProgToContainer, ProgFromCtr, ProgToNetdev} {
		if ifname, ok := strings.CutPrefix(rest, p+"-"); ok && ifname != "" {
			a.prog, a.ifname = p, ifname
			return a, true
		}
	}
	return a, false
}

// tc filter identity of the fallback: after the datapath's own (priority
// 1), so that on a pod interface's ingress from_container runs first.
const (
	tcPriority = 2
	tcHandle   = 0x2
)

// attach puts a's program on its hook, replacing in place what is there
// (u.mu held); it says nothing when it was there already.
func (u *Unit) attach(a attachment) error {
	prog := u.progs[a.prog]
	pin := filepath.Join(u.linksDir, a.pinName())
	if !u.cfg.TCX {
		qdisc := &netlink.GenericQdisc{
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: a.ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
			QdiscType:  "clsact",
		}
		if err := netlink.QdiscReplace(qdisc); err != nil {
			return fmt.Errorf("clsact qdisc on %s: %w", a.ifname, err)
		}
		f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: a.ifindex, Parent: tcParent(a.egress),
			Handle: tcHandle, Priority: tcPriority, Protocol: unix.ETH_P_ALL}, Fd: prog.FD(), Name: "glia-" + a.prog, DirectAction: true}
		if err := netlink.FilterReplace(f); err != nil {
			return fmt.Errorf("tc filter %s: %w", a.pinName(), err)
		}
		return nil
	}
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == a.ifindex {
			err := l.Update(prog)
			l.Close()
			if err != nil {
				return fmt.Errorf("replace program on %s: %w", a.pinName(), err)
			}
			return nil
		}
		l.Unpin()
		l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open pinned link %s: %w", a.pinName(), err)
	}
	at := ebpf.AttachTCXIngress
	if a.egress {
		at = ebpf.AttachTCXEgress
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: a.ifindex, Program: prog, Attach: at, Anchor: link.Tail()})
	if err != nil {
		return fmt.Errorf("attach %s: %w", a.pinName(), err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin link %s: %w", a.pinName(), err)
	}
	return nil
}

// detach removes a's program from its hook, if it is there (u.mu held).
func (u *Unit) detach(a attachment) error {
	pin := filepath.Join(u.linksDir, a.pinName())
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		err := l.Unpin()
		return errors.Join(err, l.Close())
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open pinned link %s: %w", a.pinName(), err)
	}
	if !u.cfg.TCX && a.ifindex != 0 {
		f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: a.ifindex, Parent: tcParent(a.egress),
			Handle: tcHandle, Priority: tcPriority, Protocol: unix.ETH_P_ALL}}
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("remove tc filter %s: %w", a.pinName(), err)
		}
	}
	return nil
}

func tcParent(egress bool) uint32 {
	if egress {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}
