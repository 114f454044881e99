package bench

import (
	"context"
	"fmt"
	"net"
	"time"
)

// runProgramming measures how long each mode takes, from the API write
// to the first successful connection through the change: N Services
// written at once (from the last write), one more Service when N exist,
// and one endpoint change of an existing Service. The modes' nodes watch
// the same API, so each change is measured on all of them at once.
func runProgramming(ctx context.Context, r *runner, rep *Report) error {
	rep.Modes = r.opts.Modes
	rep.Services = sortedPoints(r.opts.Services)
	return r.withEnv(ctx, rep, r.scalingSpecs(), func(e *env) error {
		modes, err := r.scalingSetup(ctx, e)
		if err != nil {
			return err
		}
		a, b, c := e.pods["backend-a"].ip, e.pods["backend-b"].ip, e.pods["backend-c"].ip
		// Alternate endpoint sets, so that a stale rule (a ClusterIP
		// reused, a change not yet applied) answers from the wrong one.
		setAB, setC := []string{a, b}, []string{c}
		wantAB, wantC := map[string]bool{"backend-a": true, "backend-b": true}, map[string]bool{"backend-c": true}
		timeout := 10 * time.Minute
		set := &serviceSet{e: e}
		for _, n := range rep.Services {
			if n > 0 {
				for i := range r.opts.Repeats {
					eps, want := setAB, wantAB
					if i%2 == 1 {
						eps, want = setC, wantC
					}
					r.p.status("programming N=%d rep %d/%d: removing the Services", n, i+1, r.opts.Repeats)
					if err := e.deleteServices(ctx); err != nil {
						return err
					}
					set.ips = nil
					r.p.status("programming N=%d rep %d/%d: writing %d Services", n, i+1, r.opts.Repeats, n)
					start := time.Now()
					if err := set.growTo(ctx, n, eps); err != nil {
						return err
					}
					write := time.Since(start)
					rep.Add("API writes of N Services", "s", "", n, "api", true, write.Seconds())
					t := set.targets()
					r.p.status("programming N=%d rep %d/%d: waiting for every mode to carry them", n, i+1, r.opts.Repeats)
					_, took, err := r.carriedModes(ctx, e, rep, fmt.Sprintf("N=%d Services at once, rep %d", n, i+1), modes, []string{t[tFirst], t[tMiddle], t[tLast]}, want, timeout)
					if err != nil {
						return err
					}
					for m, d := range took {
						rep.Add("carry N Services", "s", "", n, m, true, d.Seconds())
					}
				}
			} else if err := set.growTo(ctx, 0, setAB); err != nil {
				return err
			}
			// One more Service when N exist (N=0: the only one).
			for i := range r.opts.Repeats {
				name := fmt.Sprintf("extra-%d-%d", n, i)
				r.p.status("programming N=%d rep %d/%d: one more Service", n, i+1, r.opts.Repeats)
				var ip string
				var err error
				if n == 0 && i == 0 {
					ip = set.ips[0] // the first Service is the one more
				} else if ip, err = e.createService(ctx, name, setAB, connPorts); err != nil {
					return err
				}
				_, took, err := r.carriedModes(ctx, e, rep, fmt.Sprintf("one more Service at N=%d, rep %d", n, i+1), modes, []string{net.JoinHostPort(ip, "80")}, wantAB, timeout)
				if err != nil {
					return err
				}
				if n == 0 && i == 0 {
					continue // not timed from its write
				}
				for m, d := range took {
					rep.Add("one more Service", "ms", "", n, m, true, float64(d.Microseconds())/1e3)
				}
			}
			// One endpoint change of the middle Service.
			mid := len(set.ips) / 2
			name := fmt.Sprintf("svc-%05d", mid)
			addr := net.JoinHostPort(set.ips[mid], "80")
			cur := setAB
			if n > 0 && r.opts.Repeats%2 == 0 {
				cur = setC // the N-Services reps ended on C
			}
			for i := range r.opts.Repeats {
				next, want := setC, wantC
				if len(cur) == 1 {
					next, want = setAB, wantAB
				}
				r.p.status("programming N=%d rep %d/%d: one endpoint change", n, i+1, r.opts.Repeats)
				if err := e.setEndpoints(ctx, name, next); err != nil {
					return err
				}
				cur = next
				_, took, err := r.carriedModes(ctx, e, rep, fmt.Sprintf("endpoint change at N=%d, rep %d", n, i+1), modes, []string{addr}, want, timeout)
				if err != nil {
					return err
				}
				for m, d := range took {
					rep.Add("endpoint change", "ms", "", n, m, true, float64(d.Microseconds())/1e3)
				}
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		rep.Note("times run from the moment the API write returned to the first connection answered by the new endpoints, probed every millisecond from a pod on each mode's node; all modes watch the same writes at once, on the same 2 cores")
		return nil
	})
}
