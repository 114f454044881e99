package cli

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"

	"glia.dev/glia/internal/lab"
	"glia.dev/glia/internal/maps"
)

// defaultBPFFSDir is where a real node's agent pins its maps (its
// --bpffs-dir default).
const defaultBPFFSDir = "/sys/fs/bpf/glia"

// bpfOpts are the options of every `glia bpf` command.
type bpfOpts struct {
	g        *globals
	bpffsDir string
	out      outputFlag
}

// newBPFCmd is `glia bpf`: dumps of a node's eBPF datapath maps, read from
// their pins (read-only), as `cilium bpf ... list` prints them.
func newBPFCmd(g *globals) *cobra.Command {
	o := &bpfOpts{g: g}
	cmd := &cobra.Command{
		Use:   "bpf",
		Short: "Inspect the eBPF datapath maps of a node",
		Example: `  glia bpf lb list --node lab-node-1
  glia bpf ct list --node lab-node-2 -o json
  glia bpf nat list --bpffs-dir /sys/fs/bpf/glia`,
	}
	cmd.PersistentFlags().StringVar(&g.node, "node", "", "lab node whose maps to read (lab-node-N)")
	cmd.PersistentFlags().StringVar(&o.bpffsDir, "bpffs-dir", "", "directory of the node's pinned maps (default "+defaultBPFFSDir+")")
	addOutputFlag(cmd, &o.out, true)

	list := func(use, short string, run func(cmd *cobra.Command, dir string) error) *cobra.Command {
		group := &cobra.Command{Use: use, Short: short}
		group.AddCommand(&cobra.Command{
			Use:   "list",
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				dir, err := o.dir()
				if err != nil {
					return err
				}
				return run(cmd, dir)
			},
		})
		return group
	}
	cmd.AddCommand(
		list("lb", "List load-balancing entries: service frontends and their backends", o.lbList),
		list("ct", "List connection tracking entries of Service flows", o.ctList),
		list("nat", "List source NAT entries (masquerade, NodePort SNAT)", o.natList),
		list("endpoint", "List local endpoints as the datapath sees them", o.endpointList),
	)
	return cmd
}

// dir finds the pin directory and checks the eBPF datapath runs there.
func (o *bpfOpts) dir() (string, error) {
	dir, who := o.bpffsDir, ""
	switch {
	case o.g.node != "" && dir != "":
		return "", usageErrorf("--node and --bpffs-dir: give one")
	case o.g.node != "":
		if _, err := lab.NodeIndex(o.g.node); err != nil {
			return "", usageErrorf("--node %q: %w", o.g.node, err)
		}
		bin, err := binDir()
		if err != nil {
			return "", err
		}
		layout, err := lab.DefaultLayout(bin)
		if err != nil {
			return "", err
		}
		dir, who = layout.AgentBPFDir(o.g.node), o.g.node
	case dir == "":
		dir = defaultBPFFSDir
	}
	if _, err := os.Stat(filepath.Join(dir, maps.NameEndpoints)); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		if who != "" {
			return "", fmt.Errorf("%s runs the legacy datapath: no BPF maps (glia status --node %s)", who, who)
		}
		return "", fmt.Errorf("no BPF maps in %s: this node runs the legacy datapath, or its agent never started (glia status)", dir)
	}
	return dir, nil
}

// openMap opens a pinned map read-only; the caller closes it.
func openMap(dir, name string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s in %s: %w", name, dir, err)
	}
	return m, nil
}

func withMaps(dir string, names []string, fn func(ms map[string]*ebpf.Map) error) error {
	ms := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range ms {
			m.Close()
		}
	}()
	for _, n := range names {
		m, err := openMap(dir, n)
		if err != nil {
			return err
		}
		ms[n] = m
	}
	return fn(ms)
}

// Kinds of the lists `glia bpf ... list` prints.
const (
	kindBPFLBList       = "BPFLBEntryList"
	kindBPFCTList       = "BPFCTEntryList"
	kindBPFNATList      = "BPFNATEntryList"
	kindBPFEndpointList = "BPFEndpointList"
)

func (o *bpfOpts) emit(w io.Writer, kind string, rows any, text func(io.Writer) error) error {
	return o.out.print(w, kind, rows, text)
}

// ---- lb ----

// lbRow is one line of `glia bpf lb list`: a frontend's own line (Backend
// "0.0.0.0:0", slot 0, its kind in Flags) or one of its backends.
type lbRow struct {
	Service string   `json:"service"`
	Backend string   `json:"backend"`
	ID      uint32   `json:"id"` // service id on the frontend line, backend id on backend lines
	Slot    int      `json:"slot"`
	Flags   []string `json:"flags,omitempty"`
}

func frontendName(k maps.SvcKey) string {
	addr := k.Addr.String()
	return fmt.Sprintf("%s:%d/%s", addr, k.Port.Uint16(), maps.ProtoName(k.Proto))
}

// lbRows joins services, backends and slots into rows, frontends sorted.
func lbRows(svcs []maps.ServiceEntry, backends []maps.BackendEntry, slots, maglev []maps.SlotEntry) []lbRow {
	byID := map[uint32]maps.Backend{}
	for _, b := range backends {
		byID[b.ID] = b.Backend
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Key.Less(svcs[j].Key) })
	backendName := func(id uint32) string {
		b, ok := byID[id]
		if !ok {
			return fmt.Sprintf("<missing backend %d>", id)
		}
		return fmt.Sprintf("%s/%s", b.AddrPort(), maps.ProtoName(b.Proto))
	}
	var rows []lbRow
	for _, s := range svcs {
		v := s.Value
		kind := "ClusterIP"
		if s.Key.Scope == maps.ScopeNodePort {
			kind = "NodePort"
		}
		flags := []string{kind}
		if v.Flags&maps.SvcFlagMaglev != 0 {
			flags = append(flags, "maglev")
		} else {
			flags = append(flags, "random")
		}
		if v.Flags&maps.SvcFlagAffinity != 0 {
			flags = append(flags, "sessionAffinity")
		}
		if v.Count == 0 {
			flags = append(flags, "no backends")
		}
		svc := frontendName(s.Key)
		rows = append(rows, lbRow{Service: svc, Backend: "0.0.0.0:0", ID: v.ID, Slot: 0, Flags: flags})
		if v.Flags&maps.SvcFlagMaglev != 0 {
			// the table's distinct backends, by how many entries they own
			share := map[uint32]int{}
			for _, e := range maglev {
				if e.Key.SvcID == v.ID && e.Key.Slot >= v.SlotBase && e.Key.Slot < v.SlotBase+maps.MaglevM {
					share[e.BackendID]++
				}
			}
			ids := make([]uint32, 0, len(share))
			for id := range share {
				ids = append(ids, id)
			}
			sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
			for i, id := range ids {
				rows = append(rows, lbRow{Service: svc, Backend: backendName(id), ID: id, Slot: i + 1,
					Flags: []string{fmt.Sprintf("maglev %d/%d", share[id], maps.MaglevM)}})
			}
			continue
		}
		bySlot := map[uint32]uint32{}
		for _, e := range slots {
			if e.Key.SvcID == v.ID {
				bySlot[e.Key.Slot] = e.BackendID
			}
		}
		for i := 1; i <= int(v.Count); i++ {
			id, ok := bySlot[v.SlotBase+uint32(i)]
			if !ok {
				rows = append(rows, lbRow{Service: svc, Backend: "<missing slot>", Slot: i})
				continue
			}
			rows = append(rows, lbRow{Service: svc, Backend: backendName(id), ID: id, Slot: i})
		}
	}
	return rows
}

func renderLB(w io.Writer, rows []lbRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "SERVICE ADDRESS\tBACKEND ADDRESS (ID) (SLOT)")
	last := ""
	for _, r := range rows {
		svc := r.Service
		if svc == last {
			svc = ""
		}
		last = r.Service
		line := fmt.Sprintf("%s (%d) (%d)", r.Backend, r.ID, r.Slot)
		if len(r.Flags) > 0 {
			line += " [" + strings.Join(r.Flags, ", ") + "]"
		}
		fmt.Fprintf(tw, "%s\t%s\n", svc, line)
	}
	return tw.Flush()
}

func (o *bpfOpts) lbList(cmd *cobra.Command, dir string) error {
	return withMaps(dir, []string{maps.NameServices, maps.NameBackends, maps.NameSvcSlots, maps.NameMaglev}, func(ms map[string]*ebpf.Map) error {
		svcs, err := maps.NewServices(ms[maps.NameServices]).List()
		if err != nil {
			return err
		}
		backends, err := maps.NewBackends(ms[maps.NameBackends]).List()
		if err != nil {
			return err
		}
		slots, err := maps.NewSlots(ms[maps.NameSvcSlots]).List()
		if err != nil {
			return err
		}
		maglev, err := maps.NewSlots(ms[maps.NameMaglev]).List()
		if err != nil {
			return err
		}
		rows := lbRows(svcs, backends, slots, maglev)
		return o.emit(cmd.OutOrStdout(), kindBPFLBList, rows, func(w io.Writer) error { return renderLB(w, rows) })
	})
}

// ---- ct ----

// ctRow is one entry of glia_ct.
type ctRow struct {
	Proto     string        `json:"proto"`
	Dir       string        `json:"dir"` // SVC, REPLY or INBOUND
	Src       string        `json:"src"`
	Dst       string        `json:"dst"`
	BackendID uint32        `json:"backendID,omitempty"`
	ServiceID uint32        `json:"serviceID,omitempty"`
	RevSrc    string        `json:"revSrc,omitempty"`
	RevDst    string        `json:"revDst,omitempty"`
	Flags     []string      `json:"flags,omitempty"` // what the flow is, then its state as cilium names it
	TxFlags   uint8         `json:"txFlagsSeen,omitempty"`
	RxFlags   uint8         `json:"rxFlagsSeen,omitempty"`
	Age       time.Duration `json:"-"`
	AgeSecs   int64         `json:"lastSeenSecondsAgo"`
	Expires   time.Duration `json:"-"` // remaining lifetime; zero or less: expired
	ExpSecs   int64         `json:"expiresInSeconds"`
}

// expiry is the remaining lifetime of an entry, truncated to seconds.
func expiry(proto uint8, flags uint16, lastSeen, now uint64) time.Duration {
	return max(maps.Remaining(proto, flags, lastSeen, now), 0).Truncate(time.Second)
}

func renderExpiry(d time.Duration) string {
	if d <= 0 {
		return "expires=expired"
	}
	return "expires=" + d.String()
}

// CT directions beyond those maps names (CT_INBOUND in bpf/lib/maps.h).
const ctInbound = 2

// lessTuple orders tuples by source, destination (address, then port) and
// protocol.
func lessTuple(a, b maps.Tuple) bool {
	if c := netip.AddrPortFrom(a.SAddr.Addr(), a.SPort.Uint16()).Compare(netip.AddrPortFrom(b.SAddr.Addr(), b.SPort.Uint16())); c != 0 {
		return c < 0
	}
	if c := netip.AddrPortFrom(a.DAddr.Addr(), a.DPort.Uint16()).Compare(netip.AddrPortFrom(b.DAddr.Addr(), b.DPort.Uint16())); c != 0 {
		return c < 0
	}
	if a.Proto != b.Proto {
		return a.Proto < b.Proto
	}
	return a.Dir < b.Dir
}

func tupleEnds(t maps.Tuple) (string, string) {
	return netip.AddrPortFrom(t.SAddr.Addr(), t.SPort.Uint16()).String(),
		netip.AddrPortFrom(t.DAddr.Addr(), t.DPort.Uint16()).String()
}

func ctRows(entries []maps.CTRow, now uint64) []ctRow {
	sort.SliceStable(entries, func(i, j int) bool { return lessTuple(entries[i].Key, entries[j].Key) })
	rows := make([]ctRow, 0, len(entries))
	for _, e := range entries {
		src, dst := tupleEnds(e.Key)
		age := maps.Age(e.Entry.LastSeen, now).Truncate(time.Second)
		exp := expiry(e.Key.Proto, e.Entry.Flags, e.Entry.LastSeen, now)
		r := ctRow{Proto: maps.ProtoName(e.Key.Proto), Src: src, Dst: dst, Age: age, AgeSecs: int64(age / time.Second),
			Expires: exp, ExpSecs: int64(exp / time.Second), TxFlags: e.Entry.TxFlagsSeen, RxFlags: e.Entry.RxFlagsSeen}
		switch e.Key.Dir {
		case maps.DirCTService:
			r.Dir = "SVC"
			r.BackendID, r.ServiceID = e.Entry.BackendID, e.Entry.SvcID
		case maps.DirCTReply:
			r.Dir = "REPLY"
			r.BackendID, r.ServiceID = e.Entry.BackendID, e.Entry.SvcID
			r.RevSrc = netip.AddrPortFrom(e.Entry.RevSAddr.Addr(), e.Entry.RevSPort.Uint16()).String()
			if e.Entry.RevDAddr != (maps.IPv4{}) {
				r.RevDst = e.Entry.RevDAddr.String()
			}
		case ctInbound:
			r.Dir = "INBOUND"
		default:
			r.Dir = fmt.Sprintf("dir-%d", e.Key.Dir)
		}
		if e.Entry.Flags&maps.CTFlagHairpin != 0 {
			r.Flags = append(r.Flags, "hairpin")
		}
		if e.Entry.Flags&maps.CTFlagNodePort != 0 {
			r.Flags = append(r.Flags, "nodeport")
		}
		r.Flags = append(r.Flags, maps.StateNames(e.Entry.Flags)...)
		rows = append(rows, r)
	}
	return rows
}

func renderCT(w io.Writer, rows []ctRow) error {
	for _, r := range rows {
		line := fmt.Sprintf("%s %s %s -> %s", r.Proto, r.Dir, r.Src, r.Dst)
		switch r.Dir {
		case "SVC":
			line += fmt.Sprintf(" backend=%d service=%d", r.BackendID, r.ServiceID)
		case "REPLY":
			line += " rev-src=" + r.RevSrc
			if r.RevDst != "" {
				line += " rev-dst=" + r.RevDst
			}
			line += fmt.Sprintf(" backend=%d service=%d", r.BackendID, r.ServiceID)
		}
		if len(r.Flags) > 0 {
			line += " flags=" + strings.Join(r.Flags, ",")
		}
		line += " " + renderExpiry(r.Expires)
		if r.TxFlags != 0 || r.RxFlags != 0 {
			line += fmt.Sprintf(" TxFlagsSeen=0x%02x RxFlagsSeen=0x%02x", r.TxFlags, r.RxFlags)
		}
		line += fmt.Sprintf(" last-seen=%s ago", r.Age)
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

func (o *bpfOpts) ctList(cmd *cobra.Command, dir string) error {
	return withMaps(dir, []string{maps.NameCT}, func(ms map[string]*ebpf.Map) error {
		entries, err := maps.NewCT(ms[maps.NameCT]).List()
		if err != nil {
			return err
		}
		rows := ctRows(entries, maps.Monotonic())
		return o.emit(cmd.OutOrStdout(), kindBPFCTList, rows, func(w io.Writer) error { return renderCT(w, rows) })
	})
}

// ---- nat ----

// natRow is one entry of glia_nat: OUT translates the source of a flow
// leaving the node, IN the destination of its replies.
type natRow struct {
	Proto string        `json:"proto"`
	Dir   string        `json:"dir"` // OUT or IN
	Src   string        `json:"src"`
	Dst   string        `json:"dst"`
	To    string        `json:"to"` // XLATE_SRC for OUT, XLATE_DST for IN
	Flags []string      `json:"flags,omitempty"`
	Age   time.Duration `json:"-"`
	AgeS  int64         `json:"lastSeenSecondsAgo"`
	Exp   time.Duration `json:"-"`
	ExpS  int64         `json:"expiresInSeconds"`
}

func natRows(entries []maps.NATRow, now uint64) []natRow {
	// OUT first, then by tuple
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].Key.Dir != entries[j].Key.Dir {
			return entries[i].Key.Dir == maps.DirNATEgress
		}
		return lessTuple(entries[i].Key, entries[j].Key)
	})
	rows := make([]natRow, 0, len(entries))
	for _, e := range entries {
		src, dst := tupleEnds(e.Key)
		dir := "OUT"
		if e.Key.Dir == maps.DirNATReply {
			dir = "IN"
		}
		age := maps.Age(e.Entry.LastSeen, now).Truncate(time.Second)
		exp := expiry(e.Key.Proto, e.Entry.Flags, e.Entry.LastSeen, now)
		rows = append(rows, natRow{Proto: maps.ProtoName(e.Key.Proto), Dir: dir, Src: src, Dst: dst,
			To:    netip.AddrPortFrom(e.Entry.ToAddr.Addr(), e.Entry.ToPort.Uint16()).String(),
			Flags: maps.StateNames(e.Entry.Flags),
			Age:   age, AgeS: int64(age / time.Second), Exp: exp, ExpS: int64(exp / time.Second)})
	}
	return rows
}

func renderNAT(w io.Writer, rows []natRow) error {
	for _, r := range rows {
		xlate := "XLATE_SRC"
		if r.Dir == "IN" {
			xlate = "XLATE_DST"
		}
		line := fmt.Sprintf("%s %s %s -> %s %s %s", r.Proto, r.Dir, r.Src, r.Dst, xlate, r.To)
		if len(r.Flags) > 0 {
			line += " flags=" + strings.Join(r.Flags, ",")
		}
		line += fmt.Sprintf(" %s last-seen=%s ago", renderExpiry(r.Exp), r.Age)
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

func (o *bpfOpts) natList(cmd *cobra.Command, dir string) error {
	return withMaps(dir, []string{maps.NameNAT}, func(ms map[string]*ebpf.Map) error {
		entries, err := maps.NewNAT(ms[maps.NameNAT]).List()
		if err != nil {
			return err
		}
		rows := natRows(entries, maps.Monotonic())
		return o.emit(cmd.OutOrStdout(), kindBPFNATList, rows, func(w io.Writer) error { return renderNAT(w, rows) })
	})
}

// ---- endpoint ----

// endpointRow is one local endpoint of glia_endpoints.
type endpointRow struct {
	IP      string `json:"ip"`
	IfIndex uint32 `json:"ifindex"`
	PodMAC  string `json:"podMAC"`
	HostMAC string `json:"hostMAC"`
}

func endpointRows(entries []maps.EndpointEntry) []endpointRow {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Addr.Less(entries[j].Addr) })
	rows := make([]endpointRow, 0, len(entries))
	for _, e := range entries {
		rows = append(rows, endpointRow{IP: e.Addr.String(), IfIndex: e.IfIndex, PodMAC: e.PodMAC.String(), HostMAC: e.HostMAC.String()})
	}
	return rows
}

func renderEndpoints(w io.Writer, rows []endpointRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "IP ADDRESS\tIFINDEX\tPOD MAC\tHOST MAC")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.IP, r.IfIndex, r.PodMAC, r.HostMAC)
	}
	return tw.Flush()
}

func (o *bpfOpts) endpointList(cmd *cobra.Command, dir string) error {
	return withMaps(dir, []string{maps.NameEndpoints}, func(ms map[string]*ebpf.Map) error {
		entries, err := maps.NewEndpoints(ms[maps.NameEndpoints]).List()
		if err != nil {
			return err
		}
		rows := endpointRows(entries)
		return o.emit(cmd.OutOrStdout(), kindBPFEndpointList, rows, func(w io.Writer) error { return renderEndpoints(w, rows) })
	})
}
