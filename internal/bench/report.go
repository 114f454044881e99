package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Measurement is one metric of one mode at one point: a sample per
// repetition and their summary.
type Measurement struct {
	Metric        string    `json:"metric"`           // e.g. "p50 latency"
	Unit          string    `json:"unit"`             // e.g. "µs"
	Target        string    `json:"target,omitempty"` // what was measured, e.g. "last Service"
	X             int       `json:"services"`         // the number of Services (0 where it does not apply)
	Mode          string    `json:"mode"`
	LowerIsBetter bool      `json:"lowerIsBetter"`
	Samples       []float64 `json:"samples"`
	Summary       Summary   `json:"summary"`
}

// Machine says where figures came from.
type Machine struct {
	Hostname  string  `json:"hostname"`
	Kernel    string  `json:"kernel"`
	CPU       string  `json:"cpu"`
	Cores     int     `json:"cores"`
	MemoryGiB float64 `json:"memoryGiB"`
	Go        string  `json:"go"`
}

// Status of a target.
const (
	StatusMet         = "met"
	StatusMissed      = "MISSED"
	StatusNotMeasured = "not measured"
)

// TargetResult is one target of the issue, evaluated on a report.
type TargetResult struct {
	Name   string `json:"name"`
	Want   string `json:"want"`
	Got    string `json:"got"`
	Status string `json:"status"`
}

// Report is the result of one scenario run.
type Report struct {
	Scenario     string         `json:"scenario"`
	Description  string         `json:"description"`
	Started      time.Time      `json:"started"`
	Finished     time.Time      `json:"finished"`
	Machine      Machine        `json:"machine"`
	Modes        []string       `json:"modes"`
	Baseline     string         `json:"baseline"`
	Services     []int          `json:"services,omitempty"`
	Repeats      int            `json:"repeats"`
	Notes        []string       `json:"notes,omitempty"`
	Measurements []*Measurement `json:"measurements"`
	Targets      []TargetResult `json:"targets,omitempty"`
}

// Add records one sample.
func (r *Report) Add(metric, unit, target string, x int, mode string, lowerIsBetter bool, v float64) {
	if math.IsNaN(v) {
		return
	}
	m := r.find(metric, target, x, mode)
	if m == nil {
		m = &Measurement{Metric: metric, Unit: unit, Target: target, X: x, Mode: mode, LowerIsBetter: lowerIsBetter}
		r.Measurements = append(r.Measurements, m)
	}
	m.Samples = append(m.Samples, v)
	m.Summary = Summarize(m.Samples)
}

func (r *Report) find(metric, target string, x int, mode string) *Measurement {
	for _, m := range r.Measurements {
		if m.Metric == metric && m.Target == target && m.X == x && m.Mode == mode {
			return m
		}
	}
	return nil
}

// Median returns the median of a measurement, if it was made.
func (r *Report) Median(metric, target string, x int, mode string) (float64, bool) {
	m := r.find(metric, target, x, mode)
	if m == nil || m.Summary.N == 0 {
		return math.NaN(), false
	}
	return m.Summary.Median, true
}

// Note adds a line the table and BENCHMARKS.md readers must see.
func (r *Report) Note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// group is a row key of the table: one metric of one target at one point.
type group struct {
	metric, unit, target string
	x                    int
	lower                bool
}

func (r *Report) groups() []group {
	var out []group
	seen := map[group]bool{}
	for _, m := range r.Measurements {
		g := group{m.Metric, m.Unit, m.Target, m.X, m.LowerIsBetter}
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	return out
}

// WriteTable prints the report: medians and min–max per mode, the ratio
// of the baseline to every other mode (above 1: the baseline is better),
// the targets and the notes.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "\n%s — %s\n", r.Scenario, r.Description)
	fmt.Fprintf(w, "%d repetitions per point, modes interleaved; median [min–max]; %s\n",
		r.Repeats, machineLine(r.Machine))
	modes := r.presentModes()
	others := []string{}
	for _, m := range modes {
		if m != r.Baseline {
			others = append(others, m)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"METRIC", "TARGET", "SERVICES"}
	head = append(head, modes...)
	for _, o := range others {
		head = append(head, r.Baseline+" vs "+o)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, g := range r.groups() {
		row := []string{fmt.Sprintf("%s (%s)", g.metric, g.unit), dash(g.target), fmt.Sprint(g.x)}
		for _, mode := range modes {
			cell := "-"
			if m := r.find(g.metric, g.target, g.x, mode); m != nil {
				cell = FormatSummary(m.Summary)
			}
			row = append(row, cell)
		}
		base, okb := r.Median(g.metric, g.target, g.x, r.Baseline)
		for _, o := range others {
			v, ok := r.Median(g.metric, g.target, g.x, o)
			cell := "-"
			if ok && okb {
				cell = FormatRatio(Ratio(base, v, g.lower))
			}
			row = append(row, cell)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(others) > 0 {
		fmt.Fprintf(w, "(ratio above 1: %s is that many times better)\n", r.Baseline)
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "\nTargets:")
		for _, t := range r.Targets {
			fmt.Fprintf(w, "  [%s] %s: want %s, got %s\n", t.Status, t.Name, t.Want, t.Got)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// presentModes lists the modes that have a measurement, baseline first.
func (r *Report) presentModes() []string {
	has := map[string]bool{}
	for _, m := range r.Measurements {
		has[m.Mode] = true
	}
	var out []string
	if has[r.Baseline] {
		out = append(out, r.Baseline)
	}
	for _, m := range r.Modes {
		if m != r.Baseline && has[m] {
			out = append(out, m)
		}
	}
	for _, m := range r.Measurements { // modes not declared (e.g. the veth floor)
		if !contains(out, m.Mode) {
			out = append(out, m.Mode)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func machineLine(m Machine) string {
	return fmt.Sprintf("machine: %s, %d cores, %.0f GiB, kernel %s, %s", m.CPU, m.Cores, m.MemoryGiB, m.Kernel, m.Go)
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadReport reads a report written by WriteJSON.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("report %s: %w", path, err)
	}
	return &r, nil
}

// WriteFiles writes DIR/<scenario>.json and the plots, and returns the
// paths written.
func (r *Report) WriteFiles(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	js := filepath.Join(dir, r.Scenario+".json")
	if err := r.WriteJSON(js); err != nil {
		return nil, err
	}
	pngs, err := r.WritePlots(dir)
	return append([]string{js}, pngs...), err
}

// ThisMachine describes the machine the benchmark runs on.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			m.MemoryGiB = kb / (1 << 20)
		}
	}
	return m
}
