package bpf

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
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
	// SharedMaps are maps another unit owns and pins (network policy's,
	// package policydp), given to the programs as they are, by name:
	// never created, pinned, replaced or closed here.
	SharedMaps map[string]*ebpf.Map
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

// openMaps creates glia's maps, or re-uses those pinned in pinDir by an
// earlier run. A map's size is the one compiled in unless maxEntries
// overrides it. A pinned map whose definition changed (another layout, or
// another size in the config) is replaced, and its entries are lost, with
// a warning saying so: the service maps are written again from the
// cluster's Services at once; connection-tracking and NAT entries are
// gone, and the connections they carried lose their backend or their
// translation. pinDir "" pins nothing (tests).
func openMaps(log *slog.Logger, spec *ebpf.CollectionSpec, pinDir string, maxEntries map[string]uint32) (map[string]*ebpf.Map, error) {
	out := map[string]*ebpf.Map{}
	fail := func(err error) (map[string]*ebpf.Map, error) {
		for _, m := range out {
			m.Close()
		}
		return nil, err
	}
	if pinDir != "" {
		if err := os.MkdirAll(pinDir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
	}
	for name, ms := range spec.Maps {
		if !strings.HasPrefix(name, "glia_") {
			continue // .rodata and friends belong to one collection
		}
		ms = ms.Copy()
		ms.Pinning = ebpf.PinNone
		if n, ok := maxEntries[name]; ok {
			ms.MaxEntries = n
		}
		if pinDir != "" {
			path := filepath.Join(pinDir, name)
			m, err := ebpf.LoadPinnedMap(path, nil)
			switch {
			case err == nil:
				if cerr := ms.Compatible(m); cerr != nil {
					what := "its definition changed in this version"
					if info, err := m.Info(); err == nil && info.MaxEntries != ms.MaxEntries {
						what = fmt.Sprintf("it has %d entries and the config asks for %d", info.MaxEntries, ms.MaxEntries)
					}
					log.Warn("Replacing a pinned map: "+what+"; its entries are lost (service maps are rewritten from the cluster, "+
						"connections tracked or translated in it lose that state)", "map", name, "reason", cerr)
					m.Close()
					if err := os.Remove(path); err != nil {
						return fail(fmt.Errorf("remove incompatible pinned map %s: %w", name, err))
					}
				} else {
					out[name] = m
					continue
				}
			case !errors.Is(err, os.ErrNotExist):
				return fail(fmt.Errorf("open pinned map %s: %w", name, err))
			}
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			return fail(fmt.Errorf("create map %s: %w", name, err))
		}
		if pinDir != "" {
			if err := m.Pin(filepath.Join(pinDir, name)); err != nil {
				m.Close()
				return fail(fmt.Errorf("pin map %s: %w", name, err))
			}
		}
		out[name] = m
	}
	return out, nil
}

// loadObjects loads the three programs with cfg compiled in, sharing one
// set of maps (pinned in pinDir when it is not empty).
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
	own := all["from_container"].Copy()
	for name := range cfg.SharedMaps {
		delete(own.Maps, name)
	}
	maps, err := openMaps(log, own, pinDir, cfg.MaxEntries)
	if err != nil {
		return nil, err
	}
	o := &objects{Maps: maps}
	vars := cfg.variables()
	for name, spec := range all {
		for v, val := range vars {
			vs, ok := spec.Variables[v]
			if !ok {
				continue
			}
			if err := vs.Set(val); err != nil {
				o.Close()
				return nil, fmt.Errorf("set %s in %s: %w", v, name, err)
			}
		}
		repl := map[string]*ebpf.Map{}
		for mn := range spec.Maps {
			if m, ok := maps[mn]; ok {
				repl[mn] = m
			}
			if m, ok := cfg.SharedMaps[mn]; ok {
				repl[mn] = m
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			o.Close()
			var verr *ebpf.VerifierError
			if errors.As(err, &verr) {
				return nil, fmt.Errorf("load %s: %w\nverifier log:\n%+v", name, err, verr)
			}
			return nil, fmt.Errorf("load %s: %w", name, err)
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
				o.Close()
				return nil, fmt.Errorf("object %s lacks socket programs: has %d of %d", name, len(o.Sock), len(sockProgs))
			}
			continue
		}
		prog := coll.DetachProgram(name)
		coll.Close()
		if prog == nil {
			o.Close()
			return nil, fmt.Errorf("object %s has no program %s", name, name)
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
	return o, nil
}
