package bench

import (
	"bytes"
	"errors"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []float64
		p, want float64
	}{
		{"median odd", []float64{5, 1, 3}, 50, 3},
		{"median even", []float64{4, 1, 3, 2}, 50, 2.5},
		{"p0", []float64{4, 1, 3}, 0, 1},
		{"p100", []float64{4, 1, 3}, 100, 4},
		{"p99 of 1..100", seq(100), 99, 99.01},
		{"p50 of 1..100", seq(100), 50, 50.5},
		{"one sample", []float64{7}, 99, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Percentile(tc.samples, tc.p)
			if math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.samples, tc.p, got, tc.want)
			}
		})
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile of nothing is not NaN")
	}
}

func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(n - i) // unsorted on purpose
	}
	return out
}

func TestSummarize(t *testing.T) {
	in := []float64{3, 9, 1, 4, 5}
	got := Summarize(in)
	if d := cmp.Diff(Summary{N: 5, Median: 4, Min: 1, Max: 9}, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if d := cmp.Diff([]float64{3, 9, 1, 4, 5}, in); d != "" {
		t.Errorf("Summarize changed its input: %s", d)
	}
	if d := cmp.Diff(Summary{}, Summarize(nil)); d != "" {
		t.Errorf("empty: %s", d)
	}
}

func TestRatioAndFormat(t *testing.T) {
	for _, tc := range []struct {
		a, b  float64
		lower bool
		want  string
	}{
		{100, 520, true, "5.20x"},    // latency: a is 5.2 times better
		{3400, 2960, false, "1.15x"}, // rate: a is 1.15 times better
		{10, 1000, true, "100x"},
		{200, 100, true, "0.50x"},
		{0, 100, true, "n/a"},
		{100, 0, false, "n/a"},
	} {
		if got := FormatRatio(Ratio(tc.a, tc.b, tc.lower)); got != tc.want {
			t.Errorf("Ratio(%v, %v, lower=%v) = %s, want %s", tc.a, tc.b, tc.lower, got, tc.want)
		}
	}
	for v, want := range map[float64]string{0: "0", 0.01234: "0.0123", 1.234: "1.23", 12.34: "12.3", 1234.5: "1234", math.NaN(): "-"} {
		if got := FormatValue(v); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", v, got, want)
		}
	}
	if got := FormatSummary(Summarize([]float64{210, 200, 250})); got != "210 [200–250]" {
		t.Errorf("FormatSummary = %q", got)
	}
}

// sampleReport is a service-scaling report with known figures.
func sampleReport() *Report {
	r := &Report{Scenario: "service-scaling", Description: "test", Baseline: ModeEBPF,
		Modes: []string{ModeEBPF, ModeIPTables}, Repeats: 3, Started: time.Unix(0, 0).UTC(), Finished: time.Unix(60, 0).UTC()}
	for _, v := range []float64{100, 110, 105} {
		r.Add("p50 latency", "µs", tLast, 0, ModeEBPF, true, v)
		r.Add("p50 latency", "µs", tLast, 0, ModeIPTables, true, v*1.2)
	}
	for _, v := range []float64{108, 112, 104} {
		r.Add("p50 latency", "µs", tLast, 10000, ModeEBPF, true, v)
		r.Add("p50 latency", "µs", tLast, 10000, ModeIPTables, true, v*6)
	}
	r.Add("connection rate", "conn/s", tLast, 10000, ModeEBPF, false, 3000)
	r.Add("connection rate", "conn/s", tLast, 10000, ModeIPTables, false, 1000)
	return r
}

func TestTargets(t *testing.T) {
	r := sampleReport()
	var got []TargetResult
	for _, tg := range scalingTargets {
		got = append(got, tg.eval(r))
	}
	want := []TargetResult{
		{Name: scalingTargets0, Want: "≤ +10% over N=0", Got: "+3% (108 vs 105 µs) at N=10000", Status: StatusMet},
		{Name: scalingTargets1, Want: "≥ 5.00x", Got: "6.00x at N=10000", Status: StatusMet},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}

	// eBPF slows down with N, iptables is only 2x slower: both missed.
	r2 := sampleReport()
	r2.Measurements = nil
	r2.Add("p50 latency", "µs", tLast, 0, ModeEBPF, true, 100)
	r2.Add("p50 latency", "µs", tLast, 1000, ModeEBPF, true, 150)
	r2.Add("p50 latency", "µs", tLast, 1000, ModeIPTables, true, 300)
	got = nil
	for _, tg := range scalingTargets {
		got = append(got, tg.eval(r2))
	}
	want = []TargetResult{
		{Name: scalingTargets0, Want: "≤ +10% over N=0", Got: "+50% (150 vs 100 µs) at N=1000 (N=10000 not run)", Status: StatusMissed},
		{Name: scalingTargets1, Want: "≥ 5.00x", Got: "2.00x at N=1000 (N=10000 not run)", Status: StatusMissed},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}

	// Nothing measured.
	empty := &Report{Baseline: ModeEBPF}
	for _, tg := range append(append([]target{}, programmingTargets...), costTargets...) {
		if res := tg.eval(empty); res.Status != StatusNotMeasured {
			t.Errorf("%s on an empty report: %+v", res.Name, res)
		}
	}

	// below and near targets
	r3 := &Report{Baseline: ModeEBPF}
	r3.Add("endpoint change", "ms", "", 10000, ModeEBPF, true, 4)
	r3.Add("endpoint change", "ms", "", 10000, ModeIPTables, true, 150)
	r3.Add("RR rate", "trans/s", pathPodSame, 0, ModeEBPF, false, 80)
	r3.Add("RR rate", "trans/s", pathPodSame, 0, ModeVethFloor, false, 100)
	if res := programmingTargets[0].eval(r3); res.Status != StatusMet || res.Got != "4.00 ms at N=10000" {
		t.Errorf("endpoint change below 10 ms: %+v", res)
	}
	if res := programmingTargets[2].eval(r3); res.Status != StatusMissed || res.Got != "38x at N=10000" {
		t.Errorf("endpoint change vs iptables: %+v", res)
	}
	if res := rrTargets[2].eval(r3); res.Status != StatusMissed || res.Got != "80% (80.0 vs 100)" {
		t.Errorf("floor: %+v", res)
	}
}

var (
	scalingTargets0 = "eBPF per-connection p50 to the last Service at 10k Services, vs its own N=0"
	scalingTargets1 = "eBPF vs kube-proxy iptables, p50 to the last Service at 10k Services"
)

func TestTable(t *testing.T) {
	r := sampleReport()
	r.Machine = Machine{CPU: "Test CPU", Cores: 2, MemoryGiB: 24, Kernel: "6.18", Go: "go1.26"}
	for _, tg := range scalingTargets {
		r.Targets = append(r.Targets, tg.eval(r))
	}
	r.Note("a note")
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	want := `
service-scaling — test
3 repetitions per point, modes interleaved; median [min–max]; machine: Test CPU, 2 cores, 24 GiB, kernel 6.18, go1.26
METRIC                    TARGET        SERVICES  ebpf           kube-proxy-iptables  ebpf vs kube-proxy-iptables
p50 latency (µs)          last Service  0         105 [100–110]  126 [120–132]        1.20x
p50 latency (µs)          last Service  10000     108 [104–112]  648 [624–672]        6.00x
connection rate (conn/s)  last Service  10000     3000           1000                 3.00x
(ratio above 1: ebpf is that many times better)

Targets:
  [met] eBPF per-connection p50 to the last Service at 10k Services, vs its own N=0: want ≤ +10% over N=0, got +3% (108 vs 105 µs) at N=10000
  [met] eBPF vs kube-proxy iptables, p50 to the last Service at 10k Services: want ≥ 5.00x, got 6.00x at N=10000
Note: a note
`
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("table (-want +got):\n%s", d)
	}
}

func TestJSONRoundTripAndPlots(t *testing.T) {
	r := sampleReport()
	r.Add("RR rate", "trans/s", pathPodSame, 0, ModeEBPF, false, 20000)
	r.Add("RR rate", "trans/s", pathPodSame, 0, ModeVethFloor, false, 25000)
	dir := t.TempDir()
	paths, err := r.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ReadReport(filepath.Join(dir, "service-scaling.json"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(r, back); d != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", d)
	}
	var pngs []string
	for _, p := range paths {
		if strings.HasSuffix(p, ".png") {
			pngs = append(pngs, filepath.Base(p))
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(f)
			f.Close()
			if err != nil {
				t.Errorf("%s does not decode as PNG: %v", p, err)
				continue
			}
			if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
				t.Errorf("%s is %v", p, b)
			}
		}
	}
	want := []string{
		"service-scaling_p50-latency_last-service.png",     // a line plot over N
		"service-scaling_connection-rate_last-service.png", // one point: bars
		"service-scaling_rr-rate_pod-pod-same-node.png",
	}
	if d := cmp.Diff(want, pngs); d != "" {
		t.Errorf("plots (-want +got):\n%s", d)
	}
}

func TestRotate(t *testing.T) {
	modes := []string{"a", "b", "c"}
	var got [][]string
	for i := range 4 {
		got = append(got, rotate(modes, i))
	}
	want := [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestOptionsValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		mod func(*Options)
		ok  bool
	}{
		"default":       {func(*Options) {}, true},
		"quick":         {func(o *Options) { *o = QuickOptions() }, true},
		"no repeats":    {func(o *Options) { o.Repeats = 0 }, false},
		"too many svcs": {func(o *Options) { o.Services = []int{40000} }, false},
		"no points":     {func(o *Options) { o.Services = nil }, false},
		"bad mode":      {func(o *Options) { o.Modes = []string{"ipvs"} }, false},
		"few conns":     {func(o *Options) { o.Conns = 3 }, false},
	} {
		o := DefaultOptions()
		tc.mod(&o)
		if err := o.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", name, err, tc.ok)
		}
	}
}

func TestSeriesOK(t *testing.T) {
	r := &runner{p: newProgress(io.Discard)}
	rep := &Report{}
	if !r.seriesOK(rep, connStats{lat: []float64{1, 2, 3}}, nil, tLast, 10, ModeEBPF, "clean") {
		t.Fatal("a clean series is not OK")
	}
	if len(rep.Measurements) != 0 || len(rep.Notes) != 0 {
		t.Fatalf("a clean series left rows %v and notes %v", rep.Measurements, rep.Notes)
	}
	if !r.seriesOK(rep, connStats{lat: make([]float64, 198), failed: 2}, nil, tLast, 10, ModeIPTables, "lossy") {
		t.Fatal("a series with 1% failed is not OK")
	}
	if v, ok := rep.Median("connections failed", tLast, 10, ModeIPTables); !ok || v != 1 {
		t.Fatalf("connections failed = %v (%t), want 1%%", v, ok)
	}
	if r.seriesOK(rep, connStats{lat: make([]float64, 50), failed: 30}, errors.New("i/o timeout"), tLast, 10, ModeNFTables, "given up") {
		t.Fatal("a series given up is OK")
	}
	if v, _ := rep.Median("connections failed", tLast, 10, ModeNFTables); v != 37.5 {
		t.Fatalf("connections failed = %v, want 37.5%%", v)
	}
	if len(rep.Notes) != 3 || !strings.Contains(rep.Notes[2], "given up: series given up: i/o timeout") {
		t.Fatalf("notes %q", rep.Notes)
	}
}
