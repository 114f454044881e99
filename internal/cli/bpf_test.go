package cli

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	gliabpf "glia.dev/glia/internal/datapath/bpf"
	"glia.dev/glia/internal/maps"
)

func ip(s string) maps.IPv4 { return maps.IPv4From(netip.MustParseAddr(s)) }

func TestLBRows(t *testing.T) {
	svcs := []maps.ServiceEntry{
		{Key: maps.SvcKey{Port: maps.PortFrom(30080), Proto: maps.ProtoTCP, Scope: maps.ScopeNodePort},
			Value: maps.SvcValue{ID: 2, Count: 1, SlotBase: 1 << 31}},
		{Key: maps.SvcKey{Addr: ip("198.18.128.10"), Port: maps.PortFrom(80), Proto: maps.ProtoTCP},
			Value: maps.SvcValue{ID: 1, Count: 2, Flags: maps.SvcFlagAffinity}},
		{Key: maps.SvcKey{Addr: ip("198.18.128.11"), Port: maps.PortFrom(53), Proto: maps.ProtoUDP},
			Value: maps.SvcValue{ID: 3, Count: 2, Flags: maps.SvcFlagMaglev}},
		{Key: maps.SvcKey{Addr: ip("198.18.128.12"), Port: maps.PortFrom(443), Proto: maps.ProtoTCP},
			Value: maps.SvcValue{ID: 4}},
	}
	backends := []maps.BackendEntry{
		{ID: 7, Backend: maps.Backend{Addr: ip("198.19.1.20"), Port: maps.PortFrom(8080), Proto: maps.ProtoTCP}},
		{ID: 8, Backend: maps.Backend{Addr: ip("198.19.2.20"), Port: maps.PortFrom(8080), Proto: maps.ProtoTCP}},
		{ID: 9, Backend: maps.Backend{Addr: ip("198.19.1.53"), Port: maps.PortFrom(53), Proto: maps.ProtoUDP}},
		{ID: 10, Backend: maps.Backend{Addr: ip("198.19.2.53"), Port: maps.PortFrom(53), Proto: maps.ProtoUDP}},
	}
	slots := []maps.SlotEntry{
		{Key: maps.SlotKey{SvcID: 1, Slot: 1}, BackendID: 7},
		{Key: maps.SlotKey{SvcID: 1, Slot: 2}, BackendID: 8},
		// the NodePort is in generation B; a stale generation-A slot is not shown
		{Key: maps.SlotKey{SvcID: 2, Slot: 1<<31 + 1}, BackendID: 8},
		{Key: maps.SlotKey{SvcID: 2, Slot: 1}, BackendID: 7},
	}
	var maglev []maps.SlotEntry
	for i := uint32(0); i < maps.MaglevM; i++ {
		id := uint32(9)
		if i%3 == 0 {
			id = 10
		}
		maglev = append(maglev, maps.SlotEntry{Key: maps.SlotKey{SvcID: 3, Slot: i}, BackendID: id})
	}
	got := lbRows(svcs, backends, slots, maglev)
	want := []lbRow{
		{Service: "198.18.128.10:80/TCP", Backend: "0.0.0.0:0", ID: 1, Flags: []string{"ClusterIP", "random", "sessionAffinity"}},
		{Service: "198.18.128.10:80/TCP", Backend: "198.19.1.20:8080/TCP", ID: 7, Slot: 1},
		{Service: "198.18.128.10:80/TCP", Backend: "198.19.2.20:8080/TCP", ID: 8, Slot: 2},
		{Service: "198.18.128.11:53/UDP", Backend: "0.0.0.0:0", ID: 3, Flags: []string{"ClusterIP", "maglev"}},
		{Service: "198.18.128.11:53/UDP", Backend: "198.19.1.53:53/UDP", ID: 9, Slot: 1, Flags: []string{"maglev 680/1021"}},
		{Service: "198.18.128.11:53/UDP", Backend: "198.19.2.53:53/UDP", ID: 10, Slot: 2, Flags: []string{"maglev 341/1021"}},
		{Service: "198.18.128.12:443/TCP", Backend: "0.0.0.0:0", ID: 4, Flags: []string{"ClusterIP", "random", "no backends"}},
		{Service: "0.0.0.0:30080/TCP", Backend: "0.0.0.0:0", ID: 2, Flags: []string{"NodePort", "random"}},
		{Service: "0.0.0.0:30080/TCP", Backend: "198.19.2.20:8080/TCP", ID: 8, Slot: 1},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("rows (-want +got):\n%s", d)
	}

	var b bytes.Buffer
	if err := renderLB(&b, got[:3]); err != nil {
		t.Fatal(err)
	}
	wantText := `SERVICE ADDRESS        BACKEND ADDRESS (ID) (SLOT)
198.18.128.10:80/TCP   0.0.0.0:0 (1) (0) [ClusterIP, random, sessionAffinity]
                       198.19.1.20:8080/TCP (7) (1)
                       198.19.2.20:8080/TCP (8) (2)
`
	if d := cmp.Diff(wantText, b.String()); d != "" {
		t.Errorf("text (-want +got):\n%s", d)
	}
}

func TestCTRows(t *testing.T) {
	now := uint64(100 * time.Second)
	entries := []maps.CTRow{
		{Key: maps.Tuple{SAddr: ip("198.19.2.20"), DAddr: ip("198.19.1.10"), SPort: maps.PortFrom(8080), DPort: maps.PortFrom(41000),
			Proto: maps.ProtoTCP, Dir: maps.DirCTReply},
			Entry: maps.CTEntry{LastSeen: uint64(97 * time.Second), BackendID: 8, SvcID: 1, RevSAddr: ip("198.18.128.10"), RevSPort: maps.PortFrom(80),
				Flags: maps.CTFlagTracked | maps.CTFlagSeenNonSyn | maps.CTFlagSeenReply, TxFlagsSeen: 0x1a, RxFlagsSeen: 0x12}},
		{Key: maps.Tuple{SAddr: ip("198.19.1.10"), DAddr: ip("198.18.128.10"), SPort: maps.PortFrom(41000), DPort: maps.PortFrom(80),
			Proto: maps.ProtoTCP, Dir: maps.DirCTService},
			Entry: maps.CTEntry{LastSeen: uint64(99*time.Second + 500*time.Millisecond), BackendID: 8, SvcID: 1,
				Flags:       maps.CTFlagNodePort | maps.CTFlagTracked | maps.CTFlagTxClosing | maps.CTFlagSeenNonSyn | maps.CTFlagSeenReply,
				TxFlagsSeen: 0x1b, RxFlagsSeen: 0x12}},
		{Key: maps.Tuple{SAddr: ip("198.19.1.20"), DAddr: ip("169.254.42.1"), SPort: maps.PortFrom(8080), DPort: maps.PortFrom(42000),
			Proto: maps.ProtoUDP, Dir: maps.DirCTReply},
			Entry: maps.CTEntry{LastSeen: uint64(40 * time.Second), BackendID: 7, SvcID: 2, RevSAddr: ip("198.18.128.11"),
				RevSPort: maps.PortFrom(53), RevDAddr: ip("198.19.1.20"), Flags: maps.CTFlagHairpin}},
		{Key: maps.Tuple{SAddr: ip("198.19.1.10"), DAddr: ip("198.18.0.12"), SPort: maps.PortFrom(8080), DPort: maps.PortFrom(45000),
			Proto: maps.ProtoTCP, Dir: 2}, Entry: maps.CTEntry{LastSeen: uint64(100 * time.Second)}},
	}
	got := ctRows(entries, now)
	want := []ctRow{
		{Proto: "TCP", Dir: "INBOUND", Src: "198.19.1.10:8080", Dst: "198.18.0.12:45000", Expires: 6 * time.Hour, ExpSecs: 21600},
		{Proto: "TCP", Dir: "SVC", Src: "198.19.1.10:41000", Dst: "198.18.128.10:80", BackendID: 8, ServiceID: 1,
			Flags: []string{"nodeport", "TxClosing", "SeenNonSyn", "SeenReply"}, TxFlags: 0x1b, RxFlags: 0x12,
			Expires: 9 * time.Second, ExpSecs: 9},
		{Proto: "UDP", Dir: "REPLY", Src: "198.19.1.20:8080", Dst: "169.254.42.1:42000", BackendID: 7, ServiceID: 2,
			RevSrc: "198.18.128.11:53", RevDst: "198.19.1.20", Flags: []string{"hairpin"}, Age: 60 * time.Second, AgeSecs: 60},
		{Proto: "TCP", Dir: "REPLY", Src: "198.19.2.20:8080", Dst: "198.19.1.10:41000", BackendID: 8, ServiceID: 1,
			RevSrc: "198.18.128.10:80", Flags: []string{"SeenNonSyn", "SeenReply"}, TxFlags: 0x1a, RxFlags: 0x12,
			Age: 3 * time.Second, AgeSecs: 3, Expires: 6*time.Hour - 3*time.Second, ExpSecs: 21597},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("rows (-want +got):\n%s", d)
	}
	var b bytes.Buffer
	if err := renderCT(&b, got); err != nil {
		t.Fatal(err)
	}
	wantText := `TCP INBOUND 198.19.1.10:8080 -> 198.18.0.12:45000 expires=6h0m0s last-seen=0s ago
TCP SVC 198.19.1.10:41000 -> 198.18.128.10:80 backend=8 service=1 flags=nodeport,TxClosing,SeenNonSyn,SeenReply expires=9s TxFlagsSeen=0x1b RxFlagsSeen=0x12 last-seen=0s ago
UDP REPLY 198.19.1.20:8080 -> 169.254.42.1:42000 rev-src=198.18.128.11:53 rev-dst=198.19.1.20 backend=7 service=2 flags=hairpin expires=expired last-seen=1m0s ago
TCP REPLY 198.19.2.20:8080 -> 198.19.1.10:41000 rev-src=198.18.128.10:80 backend=8 service=1 flags=SeenNonSyn,SeenReply expires=5h59m57s TxFlagsSeen=0x1a RxFlagsSeen=0x12 last-seen=3s ago
`
	if d := cmp.Diff(wantText, b.String()); d != "" {
		t.Errorf("text (-want +got):\n%s", d)
	}
}

func TestNATRows(t *testing.T) {
	now := uint64(10 * time.Second)
	entries := []maps.NATRow{
		{Key: maps.Tuple{SAddr: ip("198.18.64.10"), DAddr: ip("198.18.0.11"), SPort: maps.PortFrom(80), DPort: maps.PortFrom(51234),
			Proto: maps.ProtoTCP, Dir: maps.DirNATReply},
			Entry: maps.NATEntry{LastSeen: uint64(8 * time.Second), ToAddr: ip("198.19.1.10"), ToPort: maps.PortFrom(40000),
				Flags: maps.CTFlagTracked | maps.CTFlagSeenNonSyn | maps.CTFlagSeenReply}},
		{Key: maps.Tuple{SAddr: ip("198.19.1.10"), DAddr: ip("198.18.64.10"), SPort: maps.PortFrom(40000), DPort: maps.PortFrom(80),
			Proto: maps.ProtoTCP, Dir: maps.DirNATEgress},
			Entry: maps.NATEntry{LastSeen: uint64(8 * time.Second), ToAddr: ip("198.18.0.11"), ToPort: maps.PortFrom(51234),
				Flags: maps.CTFlagTracked | maps.CTFlagSeenNonSyn | maps.CTFlagSeenReply}},
	}
	got := natRows(entries, now)
	want := []natRow{
		{Proto: "TCP", Dir: "OUT", Src: "198.19.1.10:40000", Dst: "198.18.64.10:80", To: "198.18.0.11:51234",
			Flags: []string{"SeenNonSyn", "SeenReply"}, Age: 2 * time.Second, AgeS: 2, Exp: 6*time.Hour - 2*time.Second, ExpS: 21598},
		{Proto: "TCP", Dir: "IN", Src: "198.18.64.10:80", Dst: "198.18.0.11:51234", To: "198.19.1.10:40000",
			Flags: []string{"SeenNonSyn", "SeenReply"}, Age: 2 * time.Second, AgeS: 2, Exp: 6*time.Hour - 2*time.Second, ExpS: 21598},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("rows (-want +got):\n%s", d)
	}
	var b bytes.Buffer
	if err := renderNAT(&b, got); err != nil {
		t.Fatal(err)
	}
	wantText := `TCP OUT 198.19.1.10:40000 -> 198.18.64.10:80 XLATE_SRC 198.18.0.11:51234 flags=SeenNonSyn,SeenReply expires=5h59m58s last-seen=2s ago
TCP IN 198.18.64.10:80 -> 198.18.0.11:51234 XLATE_DST 198.19.1.10:40000 flags=SeenNonSyn,SeenReply expires=5h59m58s last-seen=2s ago
`
	if d := cmp.Diff(wantText, b.String()); d != "" {
		t.Errorf("text (-want +got):\n%s", d)
	}
}

func TestEndpointRows(t *testing.T) {
	entries := []maps.EndpointEntry{
		{Addr: netip.MustParseAddr("198.19.1.20"), EndpointInfo: maps.EndpointInfo{IfIndex: 5,
			PodMAC: maps.MAC{2, 0, 0, 0, 0, 2}, HostMAC: maps.MAC{2, 0, 0, 0, 1, 2}}},
		{Addr: netip.MustParseAddr("198.19.1.3"), EndpointInfo: maps.EndpointInfo{IfIndex: 4,
			PodMAC: maps.MAC{2, 0, 0, 0, 0, 1}, HostMAC: maps.MAC{2, 0, 0, 0, 1, 1}}},
	}
	got := endpointRows(entries)
	var b bytes.Buffer
	if err := renderEndpoints(&b, got); err != nil {
		t.Fatal(err)
	}
	want := `IP ADDRESS    IFINDEX   POD MAC             HOST MAC
198.19.1.3    4         02:00:00:00:00:01   02:00:00:00:01:01
198.19.1.20   5         02:00:00:00:00:02   02:00:00:00:01:02
`
	if d := cmp.Diff(want, b.String()); d != "" {
		t.Errorf("text (-want +got):\n%s", d)
	}
}

func TestBPFDirLegacyNode(t *testing.T) {
	empty := t.TempDir()
	o := &bpfOpts{g: &globals{}, bpffsDir: empty}
	if _, err := o.dir(); err == nil || !strings.Contains(err.Error(), "legacy datapath") {
		t.Errorf("empty pin directory: error %v, want one naming the legacy datapath", err)
	}
	pinned := t.TempDir()
	if err := os.WriteFile(filepath.Join(pinned, maps.NameEndpoints), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o.bpffsDir = pinned
	if dir, err := o.dir(); err != nil || dir != pinned {
		t.Errorf("pin directory with maps: %q, %v", dir, err)
	}
	o.g.node = "lab-node-1"
	if _, err := o.dir(); err == nil {
		t.Error("--node and --bpffs-dir together: no error")
	}
	o.bpffsDir = ""
	o.g.node = "node-1"
	if _, err := o.dir(); err == nil || !strings.Contains(err.Error(), "lab node") {
		t.Errorf("bad lab node name: %v", err)
	}
}

// The commands read real pinned maps, read-only.
func TestPrivilegedBPFCmdReadsPins(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: bpffs and BPF maps")
	}
	dir := t.TempDir()
	if err := unix.Mount("bpffs", dir, "bpf", 0, ""); err != nil {
		t.Skipf("cannot mount a bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	spec, err := gliabpf.LoadFromContainer()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{maps.NameEndpoints, maps.NameServices, maps.NameBackends, maps.NameSvcSlots, maps.NameMaglev, maps.NameCT, maps.NameNAT} {
		ms := spec.Maps[name].Copy()
		ms.Pinning = ebpf.PinNone
		m, err := ebpf.NewMap(ms)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Pin(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		switch name {
		case maps.NameServices:
			err = maps.NewServices(m).Update(maps.SvcKey{Addr: ip("198.18.128.10"), Port: maps.PortFrom(80), Proto: maps.ProtoTCP},
				maps.SvcValue{ID: 1, Count: 1})
		case maps.NameBackends:
			err = maps.NewBackends(m).Update(7, maps.Backend{Addr: ip("198.19.1.20"), Port: maps.PortFrom(8080), Proto: maps.ProtoTCP})
		case maps.NameSvcSlots:
			err = maps.NewSlots(m).Update(maps.SlotKey{SvcID: 1, Slot: 1}, 7)
		case maps.NameEndpoints:
			err = maps.NewEndpoints(m).Update(netip.MustParseAddr("198.19.1.20"), maps.EndpointInfo{IfIndex: 5})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := newBPFCmd(&globals{})
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(append(args, "--bpffs-dir", dir))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("glia bpf %v: %v", args, err)
		}
		return out.String()
	}
	wantLB := `SERVICE ADDRESS        BACKEND ADDRESS (ID) (SLOT)
198.18.128.10:80/TCP   0.0.0.0:0 (1) (0) [ClusterIP, random]
                       198.19.1.20:8080/TCP (7) (1)
`
	if d := cmp.Diff(wantLB, run("lb", "list")); d != "" {
		t.Errorf("lb list (-want +got):\n%s", d)
	}
	if got := run("endpoint", "list", "-o", "json"); !strings.Contains(got, `"ip": "198.19.1.20"`) {
		t.Errorf("endpoint list -o json:\n%s", got)
	}
	if got := run("ct", "list"); got != "" {
		t.Errorf("ct list of an empty map: %q", got)
	}
	run("nat", "list")
}
