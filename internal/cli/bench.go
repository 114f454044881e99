package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/bench"
)

func newBenchCmd() *cobra.Command {
	var (
		services, modes  string
		repeats, conns   int
		quick            bool
		out              string
		window, duration time.Duration
		churn            float64
	)
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Measure glia's datapaths against kube-proxy (iptables, nftables) in a lab it brings up and tears down",
		Long: `glia bench brings up a lab whose nodes run the datapaths a user chooses
between — kube-proxy in iptables and nftables mode on glia's legacy
datapath, and glia's eBPF datapath — measures SCENARIO on all of them with
the modes interleaved, prints medians, min–max and the ratios between
modes, writes JSON and PNG plots to --out, and takes the lab down (also on
Ctrl-C). Everything runs on this machine.

Scenarios: ` + strings.Join(bench.ScenarioNames(), ", ") + `. BENCHMARKS.md says what each measures.`,
		Example: `  glia bench service-scaling --services 1000,5000,10000 --out /tmp/bench
  glia bench all --quick`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: bench.ScenarioNames(),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := bench.DefaultOptions()
			if quick {
				o = bench.QuickOptions()
			}
			f := cmd.Flags()
			if f.Changed("services") {
				pts, err := parseInts(services)
				if err != nil {
					return fmt.Errorf("--services: %w", err)
				}
				o.Services = pts
			}
			if f.Changed("modes") {
				o.Modes = strings.Split(modes, ",")
			}
			if f.Changed("repeats") {
				o.Repeats = repeats
			}
			if f.Changed("conns") {
				o.Conns = conns
			}
			if f.Changed("window") {
				o.Window = window
			}
			if f.Changed("duration") {
				o.Duration = duration
			}
			if f.Changed("churn") {
				o.Churn = churn
			}
			o.Out = out
			if err := o.Validate(); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("glia bench brings up a lab: run it as root")
			}
			l, err := newLab()
			if err != nil {
				return err
			}
			reports, err := bench.Run(cmd.Context(), l, args[0], o, os.Stdout)
			missed := 0
			for _, r := range reports {
				for _, t := range r.Targets {
					if t.Status == bench.StatusMissed {
						missed++
					}
				}
			}
			if missed > 0 {
				fmt.Printf("\n%d target(s) missed: see the tables above and BENCHMARKS.md\n", missed)
			}
			return err
		},
	}
	d := bench.DefaultOptions()
	f := cmd.Flags()
	f.StringVar(&services, "services", joinInts(d.Services), "numbers of Services to measure at, comma-separated")
	f.StringVar(&modes, "modes", strings.Join(d.Modes, ","), "modes for service-scaling, programming and agent-cost")
	f.IntVar(&repeats, "repeats", d.Repeats, "repetitions of every point")
	f.IntVar(&conns, "conns", d.Conns, "connections per target per repetition")
	f.DurationVar(&window, "window", d.Window, "agent-cost: length of each measuring window")
	f.DurationVar(&duration, "duration", d.Duration, "request-response: length of each RR and stream run")
	f.Float64Var(&churn, "churn", d.Churn, "agent-cost: endpoint changes per second")
	f.BoolVar(&quick, "quick", false, "a run of a few minutes: N=0,100,1000, shorter windows (flags given override it)")
	f.StringVar(&out, "out", "glia-bench", "directory for the JSON results and PNG plots")
	return cmd
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		mult := 1
		if v, ok := strings.CutSuffix(strings.ToLower(p), "k"); ok {
			p, mult = v, 1000
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", p)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

func joinInts(ns []int) string {
	var s []string
	for _, n := range ns {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}
