package bench

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Targets of service-scaling: where the client connects.
const (
	tFirst   = "first Service"
	tMiddle  = "middle Service"
	tLast    = "last Service"
	tPodAddr = "pod address (no Service)"
)

// scalingLab: a client node per mode and an eBPF node holding the two
// backends every Service points at, so each mode reaches the same
// backends by the same remote path.
func (r *runner) scalingSpecs() []nodeSpec {
	var specs []nodeSpec
	for _, m := range r.opts.Modes {
		specs = append(specs, nodeSpec{mode: m, role: "client"})
	}
	return append(specs, nodeSpec{mode: ModeEBPF, role: "backends"})
}

// scalingSetup creates the client pods, the backend pods and their
// servers, and returns the modes measurable here.
func (r *runner) scalingSetup(ctx context.Context, e *env) ([]string, error) {
	pods := map[string]string{}
	backends := e.node(ModeEBPF, "backends")
	for _, n := range []string{"backend-a", "backend-b", "backend-c"} {
		pods[n] = backends
	}
	var modes []string
	for _, m := range r.opts.Modes {
		if e.has(m) {
			modes = append(modes, m)
			pods["client-"+m] = e.node(m, "client")
		}
	}
	if err := e.addPods(ctx, pods); err != nil {
		return nil, err
	}
	return modes, e.serve("backend-a", "backend-b", "backend-c")
}

// serviceSet grows the bench Services to n (at least one: the point N=0
// is measured against a single Service).
type serviceSet struct {
	e   *env
	ips []string // ClusterIPs in creation order
}

func (s *serviceSet) growTo(ctx context.Context, n int, endpoints []string) error {
	n = max(n, 1)
	if n <= len(s.ips) {
		return nil
	}
	ips, err := s.e.createServices(ctx, "svc", len(s.ips), n, endpoints)
	if err != nil {
		return err
	}
	s.ips = append(s.ips, ips...)
	return nil
}

func (s *serviceSet) targets() map[string]string {
	return map[string]string{
		tFirst:  net.JoinHostPort(s.ips[0], "80"),
		tMiddle: net.JoinHostPort(s.ips[len(s.ips)/2], "80"),
		tLast:   net.JoinHostPort(s.ips[len(s.ips)-1], "80"),
	}
}

// waitAllCarried waits until every mode's client is answered on every
// one of addrs (by one of want, if given) and returns how long each mode
// took from now. A mode that is not carried within timeout is left out
// of took and named in failed, with why: the scenario measures the
// others and reports the failure instead of losing the whole run.
func (r *runner) waitAllCarried(ctx context.Context, e *env, modes []string, addrs []string, want map[string]bool, timeout time.Duration) (took map[string]time.Duration, failed map[string]error, err error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	type res struct {
		mode string
		d    time.Duration
		err  error
	}
	ch := make(chan res)
	for _, m := range modes {
		go func() {
			var last time.Time
			for _, a := range addrs {
				t, err := waitCarried(wctx, e.pods["client-"+m].nsPath, a, want, time.Millisecond)
				if err != nil {
					ch <- res{m, 0, fmt.Errorf("not carried within %s: %w", timeout, err)}
					return
				}
				if t.After(last) {
					last = t
				}
			}
			ch <- res{m, last.Sub(start), nil}
		}()
	}
	took, failed = map[string]time.Duration{}, map[string]error{}
	for range modes {
		x := <-ch
		if x.err != nil {
			failed[x.mode] = x.err
			continue
		}
		took[x.mode] = x.d
	}
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}
	return took, failed, nil
}

// carriedModes waits as waitAllCarried does, notes every mode that failed
// in rep, and returns the modes that were carried (in modes' order) and
// their times; callers measure those. It fails only when no mode was
// carried or ctx ended.
func (r *runner) carriedModes(ctx context.Context, e *env, rep *Report, what string, modes, addrs []string, want map[string]bool, timeout time.Duration) ([]string, map[string]time.Duration, error) {
	took, failed, err := r.waitAllCarried(ctx, e, modes, addrs, want, timeout)
	if err != nil {
		return nil, nil, err
	}
	var ok []string
	for _, m := range modes {
		if why := failed[m]; why != nil {
			rep.Note("%s: %s: %v", what, m, why)
			r.p.say("%s: %s: %v", what, m, why)
			continue
		}
		ok = append(ok, m)
	}
	if len(ok) == 0 {
		return nil, nil, fmt.Errorf("%s: no mode carried %s", what, strings.Join(addrs, ", "))
	}
	return ok, took, nil
}

// seriesOK records what failed in a series of connections: the share of
// failed connections (a row of its own) and, when the series was given
// up, a note. A failing series is a result, not the end of the run: it
// reports false and the caller goes on with the other modes and targets.
func (r *runner) seriesOK(rep *Report, st connStats, err error, target string, n int, mode, what string) bool {
	if st.failed > 0 {
		tried := st.failed + len(st.lat)
		rep.Add("connections failed", "%", target, n, mode, true, 100*float64(st.failed)/float64(tried))
		rep.Note("%s: %d of %d connections failed", what, st.failed, tried)
	}
	if err != nil {
		rep.Note("%s: series given up: %v", what, err)
		r.p.say("%s: series given up: %v", what, err)
		return false
	}
	return true
}

func runServiceScaling(ctx context.Context, r *runner, rep *Report) error {
	rep.Modes = r.opts.Modes
	rep.Services = sortedPoints(r.opts.Services)
	return r.withEnv(ctx, rep, r.scalingSpecs(), func(e *env) error {
		modes, err := r.scalingSetup(ctx, e)
		if err != nil {
			return err
		}
		eps := []string{e.pods["backend-a"].ip, e.pods["backend-b"].ip}
		set := &serviceSet{e: e}
		podAddr := net.JoinHostPort(e.pods["backend-a"].ip, strconv.Itoa(portConn))
		for _, n := range rep.Services {
			r.p.say("service-scaling: growing to %d Services", max(n, 1))
			if err := set.growTo(ctx, n, eps); err != nil {
				return err
			}
			t := set.targets()
			r.p.status("service-scaling N=%d: waiting until every mode carries the Services", n)
			atN, _, err := r.carriedModes(ctx, e, rep, fmt.Sprintf("N=%d (a mode not carrying the Services is left out at this N)", n), modes, []string{t[tFirst], t[tMiddle], t[tLast]}, nil, 10*time.Minute)
			if err != nil {
				return err
			}
			for i := range r.opts.Repeats {
				for _, m := range rotate(atN, i) {
					for _, target := range []string{tFirst, tMiddle, tLast, tPodAddr} {
						addr := t[target]
						if target == tPodAddr {
							addr = podAddr
						}
						r.p.status("service-scaling N=%d rep %d/%d %s: %d connections to the %s", n, i+1, r.opts.Repeats, m, r.opts.Conns, target)
						st, err := connSeries(ctx, e.pods["client-"+m].nsPath, addr, r.opts.Conns, false)
						if ctx.Err() != nil {
							return ctx.Err()
						}
						if !r.seriesOK(rep, st, err, target, n, m, fmt.Sprintf("%s N=%d %s rep %d", m, n, target, i+1)) {
							continue
						}
						rep.Add("p50 latency", "µs", target, n, m, true, Percentile(st.lat, 50))
						rep.Add("p99 latency", "µs", target, n, m, true, Percentile(st.lat, 99))
						rep.Add("connection rate", "conn/s", target, n, m, false, float64(len(st.lat))/st.elapsed.Seconds())
					}
					if err := ctx.Err(); err != nil {
						return err
					}
				}
			}
		}
		rep.Note("N=0 is measured with a single Service (first = middle = last); backends are 2 pods on an eBPF node of their own, the same for every mode")
		return nil
	})
}
