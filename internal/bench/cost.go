package bench

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cgroupCPU reads usage_usec of a cgroup v2 directory.
func cgroupCPU(dir string) (time.Duration, error) {
	f, err := os.Open(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "usage_usec "); ok {
			us, err := strconv.ParseInt(v, 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("no usage_usec in %s/cpu.stat", dir)
}

// procMem returns VmRSS and VmHWM of pid in MiB.
func procMem(pid int) (rss, hwm float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var kb float64
		fmt.Sscanf(strings.TrimSpace(v), "%f kB", &kb)
		switch k {
		case "VmRSS":
			rss = kb / 1024
		case "VmHWM":
			hwm = kb / 1024
		}
	}
	return rss, hwm, nil
}

// component is a measured process of a mode's node.
type component struct {
	mode, name string // name: "agent" or "kube-proxy"
	cgroup     string
	pid        int
}

func (e *env) components(ctx context.Context, modes []string) ([]component, error) {
	var out []component
	for _, m := range modes {
		node := e.node(m, "client")
		a, err := e.lab.AgentComponent(ctx, e.cs, node)
		if err != nil {
			return nil, fmt.Errorf("glia agent of %s: %w", node, err)
		}
		out = append(out, component{mode: m, name: "agent", cgroup: a.Cgroup, pid: a.PID})
		if kp, ok := e.lab.KubeProxyComponent(node); ok {
			out = append(out, component{mode: m, name: "kube-proxy", cgroup: kp.Cgroup, pid: kp.PID})
		}
	}
	return out, nil
}

// window measures every component's CPU over d, while churn (if not nil)
// runs, and records it with memory as metrics suffixed with kind.
func (r *runner) window(ctx context.Context, rep *Report, comps []component, n int, kind string, d time.Duration, churn func(context.Context)) error {
	before := map[component]time.Duration{}
	for _, c := range comps {
		v, err := cgroupCPU(c.cgroup)
		if err != nil {
			return err
		}
		before[c] = v
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	start := time.Now()
	if churn != nil {
		churn(wctx)
	}
	<-wctx.Done()
	cancel()
	if err := ctx.Err(); err != nil {
		return err
	}
	elapsed := time.Since(start).Seconds()
	total := map[string]float64{}
	for _, c := range comps {
		v, err := cgroupCPU(c.cgroup)
		if err != nil {
			return err
		}
		mc := (v - before[c]).Seconds() / elapsed * 1000
		rep.Add(c.name+" CPU, "+kind, "millicores", "", n, c.mode, true, mc)
		total[c.mode] += mc
	}
	for m, v := range total {
		rep.Add("agent+kube-proxy CPU, "+kind, "millicores", "", n, m, true, v)
	}
	if kind != "churn" {
		return nil
	}
	rssTotal := map[string]float64{}
	for _, c := range comps {
		rss, hwm, err := procMem(c.pid)
		if err != nil {
			return err
		}
		rep.Add(c.name+" RSS, steady", "MiB", "", n, c.mode, true, rss)
		rep.Add(c.name+" RSS, peak", "MiB", "", n, c.mode, true, hwm)
		rssTotal[c.mode] += rss
	}
	for m, v := range rssTotal {
		rep.Add("agent+kube-proxy RSS, steady", "MiB", "", n, m, true, v)
	}
	return nil
}

// runAgentCost measures glia-agent (and kube-proxy where it runs) of
// every mode's node at once, over a fixed window, idle and under a steady
// churn of endpoint changes, with N Services.
func runAgentCost(ctx context.Context, r *runner, rep *Report) error {
	rep.Modes = r.opts.Modes
	rep.Services = sortedPoints(r.opts.Services)
	return r.withEnv(ctx, rep, r.scalingSpecs(), func(e *env) error {
		modes, err := r.scalingSetup(ctx, e)
		if err != nil {
			return err
		}
		comps, err := e.components(ctx, modes)
		if err != nil {
			return err
		}
		a, b := e.pods["backend-a"].ip, e.pods["backend-b"].ip
		set := &serviceSet{e: e}
		for _, n := range rep.Services {
			if err := set.growTo(ctx, n, []string{a, b}); err != nil {
				return err
			}
			t := set.targets()
			r.p.status("agent-cost N=%d: waiting until every mode carries the Services", n)
			// A mode that does not carry them is still measured (its
			// cost is what it spends trying); the note says so.
			if _, _, err := r.carriedModes(ctx, e, rep, fmt.Sprintf("N=%d, before measuring (a mode not carrying them is measured all the same)", n), modes, []string{t[tFirst], t[tLast]}, nil, 10*time.Minute); err != nil {
				return err
			}
			// Let the last sync settle before measuring idle.
			time.Sleep(3 * time.Second)
			rng := rand.New(rand.NewPCG(uint64(n), 7))
			churn := func(ctx context.Context) {
				go func() {
					tick := time.NewTicker(time.Duration(float64(time.Second) / r.opts.Churn))
					defer tick.Stop()
					toggled := map[int]bool{}
					for {
						select {
						case <-ctx.Done():
							return
						case <-tick.C:
						}
						i := rng.IntN(len(set.ips))
						eps := []string{a, b}
						if !toggled[i] {
							eps = []string{a}
						}
						toggled[i] = !toggled[i]
						if err := e.setEndpoints(ctx, fmt.Sprintf("svc-%05d", i), eps); err != nil && ctx.Err() == nil {
							r.p.say("churn: %v", err)
						}
					}
				}()
			}
			for i := range r.opts.Repeats {
				r.p.status("agent-cost N=%d rep %d/%d: idle window of %s", n, i+1, r.opts.Repeats, r.opts.Window)
				if err := r.window(ctx, rep, comps, n, "idle", r.opts.Window, nil); err != nil {
					return err
				}
				r.p.status("agent-cost N=%d rep %d/%d: churn window of %s (%.0f endpoint changes/s)", n, i+1, r.opts.Repeats, r.opts.Window, r.opts.Churn)
				if err := r.window(ctx, rep, comps, n, "churn", r.opts.Window, churn); err != nil {
					return err
				}
			}
		}
		rep.Note("CPU from each process's cgroup (cpu.stat usage_usec, children such as iptables-restore included) over %s windows; churn: %.0f endpoint changes/s on random Services; RSS from /proc (peak = VmHWM since start)", r.opts.Window, r.opts.Churn)
		return nil
	})
}
