// Package bench is `glia bench`: it brings up a lab whose nodes run the
// datapaths a user would otherwise choose between — kube-proxy in
// iptables and nftables mode on glia's legacy datapath, and glia's eBPF
// datapath — measures one scenario on all of them, repetitions with the
// modes interleaved so machine drift cancels, and reports medians,
// min–max and the ratios between modes as a table, JSON and PNG plots.
// It takes the lab down when done or interrupted.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"glia.dev/glia/internal/lab"
)

// Options configure a run.
type Options struct {
	Services []int         // points: numbers of Services
	Repeats  int           // repetitions per point (≥ 5 for a figure worth quoting)
	Modes    []string      // for service-scaling, programming, agent-cost
	Conns    int           // connections per target per repetition
	Window   time.Duration // agent-cost measuring window
	Duration time.Duration // request-response: each RR and stream run
	Churn    float64       // agent-cost: endpoint changes per second
	Out      string        // directory for JSON and PNGs ("" = none)
}

// DefaultOptions is the full run the issue asks for.
func DefaultOptions() Options {
	return Options{Services: []int{0, 1000, 5000, 10000}, Repeats: 5,
		Modes: []string{ModeEBPF, ModeIPTables, ModeNFTables},
		Conns: 1000, Window: 20 * time.Second, Duration: 3 * time.Second, Churn: 10}
}

// QuickOptions runs every scenario within a few minutes on 2 cores.
func QuickOptions() Options {
	o := DefaultOptions()
	o.Services = []int{0, 100, 1000}
	o.Conns = 200
	o.Window = 6 * time.Second
	o.Duration = time.Second
	return o
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.Repeats < 1 {
		return fmt.Errorf("--repeats %d: at least 1 (5 or more for figures worth quoting)", o.Repeats)
	}
	if len(o.Services) == 0 {
		return errors.New("--services: give at least one number of Services")
	}
	for _, n := range o.Services {
		if n < 0 || n > 30000 {
			return fmt.Errorf("--services %d: between 0 and 30000 (the service range holds 32766 ClusterIPs)", n)
		}
	}
	for _, m := range o.Modes {
		if m != ModeEBPF && m != ModeIPTables && m != ModeNFTables {
			return fmt.Errorf("--modes %q: use %s, %s or %s", m, ModeEBPF, ModeIPTables, ModeNFTables)
		}
	}
	if o.Conns < 10 {
		return fmt.Errorf("--conns %d: at least 10 per target, or p99 means nothing", o.Conns)
	}
	return nil
}

// Scenario is one thing glia bench measures.
type Scenario struct {
	Name        string
	Description string
	run         func(ctx context.Context, r *runner, rep *Report) error
	targets     []target
}

// Scenarios lists the scenarios in the order `all` runs them.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "service-scaling", Description: "new TCP connections (connect, request, close) from a pod to the first, middle and last of N ClusterIP Services (2 endpoints each) and to a pod address", run: runServiceScaling, targets: scalingTargets},
		{Name: "programming", Description: "time from the API write to the first successful connection: N Services at once, one more Service, one endpoint change", run: runProgramming, targets: programmingTargets},
		{Name: "agent-cost", Description: "CPU and memory of glia-agent and kube-proxy with N Services, idle and under a steady churn of endpoint changes", run: runAgentCost, targets: costTargets},
		{Name: "request-response", Description: "TCP request/response rate and throughput, pod→pod and pod→Service→pod, same node and across nodes, legacy vs BPF host routing, and a bare veth pair as the floor", run: runRequestResponse, targets: rrTargets},
		{Name: "masquerade", Description: "new connections per second to the outside world through iptables vs BPF masquerade", run: runMasquerade, targets: masqTargets},
	}
}

// ScenarioNames lists the names `glia bench` accepts.
func ScenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	return append(out, "all")
}

type runner struct {
	lab  *lab.Lab
	opts Options
	p    *progress
}

// Run runs scenario ("all" for every one) in labs it brings up and takes
// down, prints each report's table to out, and writes the files to
// opts.Out.
func Run(ctx context.Context, l *lab.Lab, scenario string, opts Options, out io.Writer) ([]*Report, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	var todo []Scenario
	for _, s := range Scenarios() {
		if scenario == "all" || scenario == s.Name {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		return nil, fmt.Errorf("unknown scenario %q: use one of %s", scenario, strings.Join(ScenarioNames(), ", "))
	}
	r := &runner{lab: l, opts: opts, p: newProgress(out)}
	var reports []*Report
	for _, s := range todo {
		rep := &Report{Scenario: s.Name, Description: s.Description, Started: time.Now().UTC(), Machine: ThisMachine(),
			Baseline: ModeEBPF, Repeats: opts.Repeats}
		err := s.run(ctx, r, rep)
		rep.Finished = time.Now().UTC()
		r.p.done()
		for _, t := range s.targets {
			rep.Targets = append(rep.Targets, t.eval(rep))
		}
		if len(rep.Measurements) > 0 {
			rep.WriteTable(out)
			if opts.Out != "" {
				paths, werr := rep.WriteFiles(opts.Out)
				if werr != nil {
					err = errors.Join(err, werr)
				}
				fmt.Fprintf(out, "Wrote %s\n", strings.Join(paths, ", "))
			}
		}
		reports = append(reports, rep)
		if err != nil {
			return reports, fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	return reports, nil
}

// withEnv brings up a lab for nodes, runs f, and always takes the lab down.
func (r *runner) withEnv(ctx context.Context, rep *Report, specs []nodeSpec, f func(e *env) error) (err error) {
	e, err := upEnv(ctx, r.lab, r.p, specs)
	defer func() {
		if e != nil {
			err = errors.Join(err, e.close())
		}
	}()
	if err != nil {
		return err
	}
	for mode, why := range e.unavailable {
		rep.Note("%s was not measured: %v", mode, why)
	}
	return f(e)
}

// rotate returns modes starting at index i: A B C, B C A, C A B, … so
// no mode always goes first.
func rotate(modes []string, i int) []string {
	if len(modes) == 0 {
		return nil
	}
	i %= len(modes)
	return append(append([]string(nil), modes[i:]...), modes[:i]...)
}

func sortedPoints(ns []int) []int {
	out := append([]int(nil), ns...)
	sort.Ints(out)
	return out
}

// progress prints what the benchmark is doing: one line overwritten in
// place on a terminal, a line per step otherwise.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	start time.Time
	open  bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		p.tty = term.IsTerminal(int(f.Fd()))
	}
	return p
}

// say prints a line that stays.
func (p *progress) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.w, "[bench %s] %s\n", p.elapsed(), fmt.Sprintf(format, args...))
}

// status shows what is going on now (overwritten by the next status on
// a terminal).
func (p *progress) status(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf("[bench %s] %s", p.elapsed(), fmt.Sprintf(format, args...))
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.open = true
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}

func (p *progress) clear() {
	if p.open {
		fmt.Fprint(p.w, "\r\033[K")
		p.open = false
	}
}

func (p *progress) elapsed() string {
	d := time.Since(p.start).Round(time.Second)
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}
