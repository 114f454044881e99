package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf"

	"glia.dev/glia/internal/datapath"
	"glia.dev/glia/internal/maps"
)

// Flags of Config.Flags, as CFG_* in bpf/lib/common.h.
const (
	FlagHostRouting = 1 << 0
	FlagMasquerade  = 1 << 1
	FlagKPR         = 1 << 2
	FlagTunnel      = 1 << 3
)

// Config is the runtime configuration compiled into the programs at load
// time (the volatile const globals of bpf/lib/common.h).
type Config struct {
	NodeIP       netip.Addr
	PodCIDR      netip.Prefix
	ClusterCIDR  netip.Prefix
	NodeMAC      net.HardwareAddr
	NodeIfIndex  uint32
	VXLANIfIndex uint32
	Flags        uint32
	// SocketLB loads the socket load-balancing programs too, acting on
	// sockets of the network namespace whose cookie is NetnsCookie.
	SocketLB    bool
	NetnsCookie uint64
	// MaxEntries overrides the size a map is compiled with, by map name
	// (from the config keys bpf-lb-map-max, bpf-ct-map-max, bpf-nat-map-max).
	MaxEntries map[string]uint32
	// Layouts is the history of the maps' layouts (nil: maps.Layouts());
	// tests give synthetic older layouts.
	Layouts maps.Registry
	// SharedMaps are maps another unit owns and pins (network policy's,
	// package policydp), given to the programs as they are, by name:
	// never created, pinned, migrated, replaced or closed here.
	SharedMaps map[string]*ebpf.Map
}

// policyMaps are the maps of bpf/lib/policy.h, package policydp's.
var policyMaps = map[string]bool{
	"glia_ipcache": true, "glia_policy": true, "glia_ep_policy": true,
	"glia_policy_ct": true, "glia_policy_state": true, "glia_policy_drops": true,
}

// MaxEntries turns the configured map sizes into per-map sizes: the
// service, backend and affinity maps take LB entries, the two slot maps
// four per service entry (as compiled: 65536 services, 262144 slots).
func MaxEntries(s datapath.MapSizes) map[string]uint32 {
	out := map[string]uint32{}
	if s.LB > 0 {
		for _, n := range []string{maps.NameServices, maps.NameBackends, maps.NameAffinity} {
			out[n] = uint32(s.LB)
		}
		out[maps.NameSvcSlots] = uint32(4 * s.LB)
		out[maps.NameMaglev] = uint32(4 * s.LB)
	}
	if s.CT > 0 {
		out[maps.NameCT] = uint32(s.CT)
	}
	if s.NAT > 0 {
		out[maps.NameNAT] = uint32(s.NAT)
	}
	return out
}

func prefixMask(p netip.Prefix) [4]byte {
	var m [4]byte
	bits := p.Bits()
	for i := range 4 {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}

func (c Config) variables() map[string]any {
	var mac [6]byte
	copy(mac[:], c.NodeMAC)
	pod, cluster := c.PodCIDR.Masked(), c.ClusterCIDR.Masked()
	as4 := func(a netip.Addr) [4]byte {
		if !a.Is4() {
			return [4]byte{}
		}
		return a.As4()
	}
	return map[string]any{
		"cfg_node_ip":       as4(c.NodeIP),
		"cfg_pod_cidr":      as4(pod.Addr()),
		"cfg_pod_mask":      prefixMask(pod),
		"cfg_cluster_cidr":  as4(cluster.Addr()),
		"cfg_cluster_mask":  prefixMask(cluster),
		"cfg_node_mac":      mac,
		"cfg_node_ifindex":  c.NodeIfIndex,
		"cfg_vxlan_ifindex": c.VXLANIfIndex,
		"cfg_flags":         c.Flags,
		"cfg_netns_cookie":  c.NetnsCookie,
	}
}

// objects are the loaded programs and the maps they share.
type objects struct {
	FromContainer *ebpf.Program
	FromNetdev    *ebpf.Program
	ToNetdev      *ebpf.Program
	// Sock holds the socket load-balancing programs by name (sockProgs),
	// when Config.SocketLB asked for them.
	Sock map[string]*ebpf.Program
	Maps map[string]*ebpf.Map
	// unshared are network policy's maps the caller did not share
	// (Config.SharedMaps): fresh and unpinned, so the programs load (their
	// policy code is not ready, so it enforces nothing).
	unshared map[string]*ebpf.Map
	// pins migrates the pinned maps; finish it once the programs are
	// attached (nil without a pin directory).
	pins *pinnedMaps
}

// sockProgs are the programs of bpf/sock_lb.c and their cgroup hooks.
var sockProgs = []struct {
	name   string
	attach ebpf.AttachType
}{
	{"sock4_connect", ebpf.AttachCGroupInet4Connect},
	{"sock4_sendmsg", ebpf.AttachCGroupUDP4Sendmsg},
	{"sock4_recvmsg", ebpf.AttachCGroupUDP4Recvmsg},
	{"sock4_getpeername", ebpf.AttachCgroupInet4GetPeername},
}

func (o *objects) Close() error {
	var errs []error
	for _, p := range []*ebpf.Program{o.FromContainer, o.FromNetdev, o.ToNetdev} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	for _, p := range o.Sock {
		errs = append(errs, p.Close())
	}
	for _, m := range o.Maps {
		errs = append(errs, m.Close())
	}
	for _, m := range o.unshared {
		errs = append(errs, m.Close())
	}
	if o.pins != nil && o.pins.recMap != nil {
		errs = append(errs, o.pins.recMap.Close())
	}
	return errors.Join(errs...)
}

// specs returns the collection specs of the tc programs.
func specs() (map[string]*ebpf.CollectionSpec, error) {
	out := map[string]*ebpf.CollectionSpec{}
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){
		"from_container": LoadFromContainer,
		"from_netdev":    LoadFromNetdev,
		"to_netdev":      LoadToNetdev,
	} {
		s, err := load()
		if err != nil {
			return nil, fmt.Errorf("load %s spec: %w", name, err)
		}
		out[name] = s
	}
	return out, nil
}

// newMaps creates glia's maps, unpinned (tests without a pin directory).
// A map's size is the one compiled in unless maxEntries overrides it.
func newMaps(spec *ebpf.CollectionSpec, maxEntries map[string]uint32) (map[string]*ebpf.Map, error) {
	out := map[string]*ebpf.Map{}
	for name, ms := range spec.Maps {
		if !strings.HasPrefix(name, "glia_") {
			continue // .rodata and friends belong to one collection
		}
		ms = ms.Copy()
		ms.Pinning = ebpf.PinNone
		if n, ok := maxEntries[name]; ok {
			ms.MaxEntries = n
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			for _, m := range out {
				m.Close()
			}
			return nil, fmt.Errorf("create map %s: %w", name, err)
		}
		out[name] = m
	}
	return out, nil
}

// loadObjects loads the three programs with cfg compiled in, sharing one
// set of maps: pinned in pinDir when it is not empty, where the maps an
// earlier run pinned are re-used or migrated (migrate.go). The migrated
// maps take their names once every program has loaded; the caller
// attaches the programs and then calls o.finish.
func loadObjects(log *slog.Logger, cfg Config, pinDir string) (*objects, error) {
	all, err := specs()
	if err != nil {
		return nil, err
	}
	if cfg.SocketLB {
		if all["sock_lb"], err = LoadSockLB(); err != nil {
			return nil, fmt.Errorf("load sock_lb spec: %w", err)
		}
	}
	// Every object declares the shared maps: each must agree on their size
	// for the pinned map to replace its own.
	for _, spec := range all {
		for name, n := range cfg.MaxEntries {
			if ms, ok := spec.Maps[name]; ok {
				ms.MaxEntries = n
			}
		}
	}
	// Network policy's maps are package policydp's (pinned in its own
	// directory, with its own lifecycle): never pinned or migrated here.
	own := all["from_container"].Copy()
	policy := &ebpf.CollectionSpec{Maps: map[string]*ebpf.MapSpec{}}
	for name, ms := range own.Maps {
		if policyMaps[name] {
			if _, shared := cfg.SharedMaps[name]; !shared {
				policy.Maps[name] = ms
			}
			delete(own.Maps, name)
		}
	}
	o := &objects{}
	if o.unshared, err = newMaps(policy, nil); err != nil {
		return nil, err
	}
	if pinDir != "" {
		reg := cfg.Layouts
		if reg == nil {
			reg = maps.Layouts()
		}
		if o.pins, err = openPinned(log, own, pinDir, cfg.MaxEntries, reg); err != nil {
			o.Close() // the unshared maps
			return nil, err
		}
		o.Maps = o.pins.maps
	} else if o.Maps, err = newMaps(own, cfg.MaxEntries); err != nil {
		o.Close()
		return nil, err
	}
	fail := func(err error) (*objects, error) {
		if o.pins != nil {
			o.pins.abort() // closes the maps: the old ones stay pinned as they were
			o.Maps = nil
		}
		o.Close()
		return nil, err
	}
	vars := cfg.variables()
	for name, spec := range all {
		for v, val := range vars {
			vs, ok := spec.Variables[v]
			if !ok {
				continue
			}
			if err := vs.Set(val); err != nil {
				return fail(fmt.Errorf("set %s in %s: %w", v, name, err))
			}
		}
		repl := map[string]*ebpf.Map{}
		for mn := range spec.Maps {
			if m, ok := o.Maps[mn]; ok {
				repl[mn] = m
			}
			if m, ok := cfg.SharedMaps[mn]; ok {
				repl[mn] = m
			}
			if m, ok := o.unshared[mn]; ok {
				repl[mn] = m
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			var verr *ebpf.VerifierError
			if errors.As(err, &verr) {
				return fail(fmt.Errorf("load %s: %w\nverifier log:\n%+v", name, err, verr))
			}
			return fail(fmt.Errorf("load %s: %w", name, err))
		}
		if name == "sock_lb" {
			o.Sock = map[string]*ebpf.Program{}
			for _, sp := range sockProgs {
				if prog := coll.DetachProgram(sp.name); prog != nil {
					o.Sock[sp.name] = prog
				}
			}
			coll.Close()
			if len(o.Sock) != len(sockProgs) {
				return fail(fmt.Errorf("object %s lacks socket programs: has %d of %d", name, len(o.Sock), len(sockProgs)))
			}
			continue
		}
		prog := coll.DetachProgram(name)
		coll.Close()
		if prog == nil {
			return fail(fmt.Errorf("object %s has no program %s", name, name))
		}
		switch name {
		case "from_container":
			o.FromContainer = prog
		case "from_netdev":
			o.FromNetdev = prog
		case "to_netdev":
			o.ToNetdev = prog
		}
	}
	if o.pins != nil {
		// Every program loaded: the migrated maps take their names; the
		// old ones wait under <name>_swap for finish.
		if err := o.pins.exchange(); err != nil {
			o.Close()
			return nil, err
		}
	}
	return o, nil
}

// finish completes the maps' migration once the programs are attached
// (nothing without a pin directory).
func (o *objects) finish() ([]maps.Migration, error) {
	if o.pins == nil {
		return nil, nil
	}
	return o.pins.finish()
}
