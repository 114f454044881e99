package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"glia.dev/glia/internal/maps"
	"glia.dev/glia/internal/state"
)

// Micro-benchmarks of the BPF programs on crafted packets (prog.Run), at
// 1k, 10k and 100k map entries, and of programming services into the maps.
//
//	go test -run '^$' -bench . -benchtime 20000x ./internal/datapath/bpf/
//
// The metric that matters is ns/pkt: the time the kernel measured inside
// BPF_PROG_TEST_RUN for the program alone, summed over b.N runs. Go's
// ns/op also counts the syscall and crafting the packet.
//
// Each packet is run once (Repeat 1): with Repeat > 1 the kernel runs the
// program again on the packet it already rewrote, which would measure
// another path than the one named.

// benchSizes are the map sizes the benchmarks are run at.
var benchSizes = []struct {
	name string
	n    int
}{{"1k", 1_000}, {"10k", 10_000}, {"100k", 100_000}}

// benchMaxEntries enlarges the maps a 100k-service benchmark fills beyond
// the sizes compiled into bpf/lib/maps.h (65536 services and backends).
var benchMaxEntries = map[string]uint32{
	maps.NameServices: 1 << 18,
	maps.NameBackends: 1 << 18,
	maps.NameSvcSlots: 1 << 20,
	maps.NameCT:       1 << 18,
	maps.NameNAT:      1 << 18,
}

// loadBench loads the three programs like loadObjects, with the maps
// enlarged to benchMaxEntries.
func loadBench(b *testing.B, flags uint32) *objects {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root to load BPF programs")
	}
	cfg := Config{
		NodeIP:      netip.MustParseAddr(nodeIP),
		PodCIDR:     netip.MustParsePrefix("198.19.1.0/24"),
		ClusterCIDR: netip.MustParsePrefix("198.19.0.0/16"),
		NodeIfIndex: 2,
		Flags:       flags,
	}
	all, err := specs()
	if err != nil {
		b.Fatal(err)
	}
	for _, spec := range all {
		for name, size := range benchMaxEntries {
			if ms, ok := spec.Maps[name]; ok {
				ms.MaxEntries = size
			}
		}
	}
	mm, err := newMaps(all["from_container"], nil)
	if err != nil {
		b.Fatal(err)
	}
	o := &objects{Maps: mm}
	b.Cleanup(func() { o.Close() })
	for name, spec := range all {
		for v, val := range cfg.variables() {
			if vs, ok := spec.Variables[v]; ok {
				if err := vs.Set(val); err != nil {
					b.Fatal(err)
				}
			}
		}
		repl := map[string]*ebpf.Map{}
		for mn := range spec.Maps {
			if m, ok := mm[mn]; ok {
				repl[mn] = m
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
		if err != nil {
			var verr *ebpf.VerifierError
			if errors.As(err, &verr) {
				b.Fatalf("load %s: %+v", name, verr)
			}
			b.Fatalf("load %s: %v", name, err)
		}
		prog := coll.DetachProgram(name)
		coll.Close()
		switch name {
		case "from_container":
			o.FromContainer = prog
		case "from_netdev":
			o.FromNetdev = prog
		case "to_netdev":
			o.ToNetdev = prog
		}
	}
	return o
}

// benchVIP is the frontend of the i-th benchmark service: addresses of
// the service range, then the next port.
func benchVIP(i int) netip.AddrPort {
	base := netip.MustParseAddr("198.18.128.0").As4()
	n := binary.BigEndian.Uint32(base[:]) + uint32(i%32768)
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], n)
	return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(80+i/32768))
}

// benchServices builds n ClusterIP services with two backends each, on
// pods of other nodes (so the program takes the plain DNAT path).
func benchServices(n int) []svcPort {
	out := make([]svcPort, n)
	for i := range out {
		b1 := netip.AddrFrom4([4]byte{198, 19, byte(2 + i/65536%200), byte(i / 256 % 256)})
		b2 := netip.AddrFrom4([4]byte{198, 19, byte(2 + i/65536%200), byte(i % 256)})
		out[i] = svcPort{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i), Protocol: "TCP",
			Frontend: benchVIP(i), Backends: []state.Backend{
				{Addr: netip.AddrPortFrom(b1, 8080), Ready: true},
				{Addr: netip.AddrPortFrom(b2, 8081), Ready: true},
			}}
	}
	return out
}

func benchLB(b *testing.B, o *objects) *lbWriter {
	return newLBWriter(maps.NewServices(o.Maps[maps.NameServices]), maps.NewBackends(o.Maps[maps.NameBackends]),
		maps.NewSlots(o.Maps[maps.NameSvcSlots]), maps.NewSlots(o.Maps[maps.NameMaglev]), false)
}

// runOnce runs prog on pkt once and returns the verdict and the time the
// kernel measured for the program.
func runOnce(b *testing.B, prog *ebpf.Program, pkt []byte) (uint32, time.Duration) {
	ret, d, err := prog.Benchmark(pkt, 1, nil)
	if err != nil {
		b.Fatalf("run: %v", err)
	}
	return ret, d
}

func reportPerPacket(b *testing.B, total time.Duration) {
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/pkt")
}

// fillMap puts n unrelated flows into a CT or NAT map (value is a
// pointer to a maps.CTEntry or maps.NATEntry), as other traffic would.
func fillMap(b *testing.B, m *ebpf.Map, n int, value any) {
	b.Helper()
	keys := make([]maps.Tuple, n)
	for i := range keys {
		keys[i] = maps.Tuple{
			SAddr: maps.IPv4{198, 19, byte(100 + i/65536), byte(i / 256 % 256)},
			DAddr: maps.IPv4{198, 19, 250, byte(i % 256)},
			SPort: maps.PortFrom(uint16(1000 + i%50000)), DPort: maps.PortFrom(80), Proto: maps.ProtoTCP,
		}
	}
	for i := range keys {
		if err := m.Update(&keys[i], value, ebpf.UpdateAny); err != nil {
			b.Fatalf("fill %d entries: %v", n, err)
		}
	}
}

// BenchmarkFromContainerLB: a pod's packet to a ClusterIP with N services
// programmed. "new" is a SYN of a new flow (service lookup, backend pick,
// CT entry created); "established" a packet of a flow the CT knows.
func BenchmarkFromContainerLB(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			o := loadBench(b, FlagKPR)
			svcs := benchServices(size.n)
			if err := benchLB(b, o).syncPorts(svcs); err != nil {
				b.Fatalf("program %d services: %v", size.n, err)
			}
			client := netip.MustParseAddr(podA)
			b.Run("new", func(b *testing.B) {
				var total time.Duration
				for i := 0; b.Loop(); i++ {
					s := svcs[(i*7919)%len(svcs)].Frontend
					src := netip.AddrFrom4([4]byte{198, 19, 1, byte(10 + i/50000%200)})
					pkt := ether(ipPacket(src, s.Addr(), protoTCP, tcpSeg(uint16(10000+i%50000), s.Port(), tcpSYN, 1, nil)))
					ret, d := runOnce(b, o.FromContainer, pkt)
					if ret != tcOK {
						b.Fatalf("verdict %d", ret)
					}
					total += d
				}
				reportPerPacket(b, total)
			})
			b.Run("established", func(b *testing.B) {
				s := svcs[len(svcs)-1].Frontend
				pkt := ether(ipPacket(client, s.Addr(), protoTCP, tcpSeg(33333, s.Port(), tcpACK, 1, []byte("hello"))))
				runOnce(b, o.FromContainer, append([]byte(nil), pkt...))
				var total time.Duration
				for b.Loop() {
					_, d := runOnce(b, o.FromContainer, pkt)
					total += d
				}
				reportPerPacket(b, total)
			})
		})
	}
}

// BenchmarkFromContainerNoService: pod-to-pod traffic (no frontend) with
// N services programmed: the cost the LB adds to traffic it does not touch.
func BenchmarkFromContainerNoService(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			o := loadBench(b, FlagKPR)
			if err := benchLB(b, o).syncPorts(benchServices(size.n)); err != nil {
				b.Fatal(err)
			}
			pkt := tcpPkt(podA, podFar, 40000, 8080, tcpACK)
			var total time.Duration
			for b.Loop() {
				_, d := runOnce(b, o.FromContainer, pkt)
				total += d
			}
			reportPerPacket(b, total)
		})
	}
}

// BenchmarkCTLookup: a backend's reply arriving on the node's device,
// reverse-translated through the CT, with N other flows in the CT.
func BenchmarkCTLookup(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			o := loadBench(b, FlagKPR)
			fillMap(b, o.Maps[maps.NameCT], size.n, &maps.CTEntry{BackendID: 1, SvcID: 1})
			if err := benchLB(b, o).syncPorts([]svcPort{svc("TCP", vip+":80", 0, podFar+":8080")}); err != nil {
				b.Fatal(err)
			}
			ret, _ := runOnce(b, o.FromContainer, tcpPkt(podA, vip, 41000, 80, tcpSYN))
			if ret != tcOK {
				b.Fatalf("request verdict %d", ret)
			}
			reply := tcpPkt(podFar, podA, 8080, 41000, tcpSYN|tcpACK)
			var total time.Duration
			for b.Loop() {
				_, d := runOnce(b, o.FromNetdev, reply)
				total += d
			}
			reportPerPacket(b, total)
		})
	}
}

// BenchmarkToNetdevSNAT: a pod's packet to the outside world through BPF
// masquerade with N other flows in the NAT map. "new" allocates a port
// for a new flow; "established" finds the flow's translation.
func BenchmarkToNetdevSNAT(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			o := loadBench(b, FlagKPR|FlagMasquerade)
			fillMap(b, o.Maps[maps.NameNAT], size.n, &maps.NATEntry{ToAddr: maps.IPv4{198, 18, 0, 11}, ToPort: maps.PortFrom(50000)})
			b.Run("new", func(b *testing.B) {
				var total time.Duration
				for i := 0; b.Loop(); i++ {
					dst := netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + i%250)})
					pkt := ether(ipPacket(netip.MustParseAddr(podA), dst, protoTCP,
						tcpSeg(uint16(20000+i/250%40000), uint16(80+i/(250*40000)), tcpSYN, 1, nil)))
					ret, d := runOnce(b, o.ToNetdev, pkt)
					if ret != tcOK {
						b.Fatalf("verdict %d", ret)
					}
					total += d
				}
				reportPerPacket(b, total)
			})
			b.Run("established", func(b *testing.B) {
				pkt := tcpPkt(podA2, world, 51000, 443, tcpACK)
				runOnce(b, o.ToNetdev, append([]byte(nil), pkt...))
				var total time.Duration
				for b.Loop() {
					_, d := runOnce(b, o.ToNetdev, pkt)
					total += d
				}
				reportPerPacket(b, total)
			})
		})
	}
}

// BenchmarkLBSync: programming services into the maps. "all" writes N
// services into empty maps (the maps are emptied between runs, untimed);
// "one-change" is a full sync (SyncServices) in which one service's
// backends changed when N exist; "one-update" the same change given to
// UpdateServices alone — what an endpoint change costs the agent;
// "noop-sync" a periodic resync in which nothing changed; "restore"
// rebuilding the writer's state from the maps, as Init does after a
// restart. The map-ops metric is map entries read, written or deleted
// per run.
func BenchmarkLBSync(b *testing.B) {
	for _, size := range benchSizes[:2] {
		b.Run(size.name, func(b *testing.B) {
			o := loadBench(b, FlagKPR)
			w := benchLB(b, o)
			svcs := benchServices(size.n)
			reportOps := func(b *testing.B, before lbOps) {
				ops := w.ops.Reads + w.ops.Writes + w.ops.Deletes - before.Reads - before.Writes - before.Deletes
				b.ReportMetric(float64(ops)/float64(b.N), "map-ops/op")
			}
			b.Run("all", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					if err := w.syncPorts(nil); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					if err := w.syncPorts(svcs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(size.n), "ns/service")
			})
			last := len(svcs) - 1
			orig := svcs[last].Backends
			flip := func(i int) {
				if i%2 == 0 {
					svcs[last].Backends = orig[:1]
				} else {
					svcs[last].Backends = orig
				}
			}
			b.Run("one-change", func(b *testing.B) {
				if err := w.syncPorts(svcs); err != nil {
					b.Fatal(err)
				}
				before := w.ops
				for i := 0; b.Loop(); i++ {
					flip(i)
					if err := w.syncPorts(svcs); err != nil {
						b.Fatal(err)
					}
				}
				reportOps(b, before)
				svcs[last].Backends = orig
			})
			b.Run("one-update", func(b *testing.B) {
				if err := w.syncPorts(svcs); err != nil {
					b.Fatal(err)
				}
				key := svcs[last].ServiceKey()
				before := w.ops
				for i := 0; b.Loop(); i++ {
					flip(i)
					if err := w.updatePorts(map[string][]svcPort{key: {svcs[last]}}); err != nil {
						b.Fatal(err)
					}
				}
				reportOps(b, before)
				svcs[last].Backends = orig
			})
			b.Run("noop-sync", func(b *testing.B) {
				if err := w.syncPorts(svcs); err != nil {
					b.Fatal(err)
				}
				before := w.ops
				for b.Loop() {
					if err := w.syncPorts(svcs); err != nil {
						b.Fatal(err)
					}
				}
				reportOps(b, before)
			})
			b.Run("restore", func(b *testing.B) {
				if err := w.syncPorts(svcs); err != nil {
					b.Fatal(err)
				}
				r := benchLB(b, o)
				for b.Loop() {
					if _, err := r.restore(); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
