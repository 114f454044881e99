package bench

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"glia.dev/glia/internal/lab"
)

const tOutside = "pod→outside world (203.0.113.10:80)"

// runMasquerade: from a pod on a legacy node (iptables MASQUERADE) and one
// on an eBPF node (BPF masquerade), new connections (connect, HTTP
// request, close) to the outside namespace's web server, which answers
// with the source address it saw; modes interleaved.
func runMasquerade(ctx context.Context, r *runner, rep *Report) error {
	modes := []string{ModeEBPF, ModeLegacy}
	rep.Modes = modes
	specs := []nodeSpec{{ModeEBPF, "client"}, {ModeIPTables, "client"}}
	nodeMode := map[string]string{ModeEBPF: ModeEBPF, ModeLegacy: ModeIPTables}
	return r.withEnv(ctx, rep, specs, func(e *env) error {
		pods := map[string]string{}
		for _, m := range modes {
			pods["client-"+m] = e.node(nodeMode[m], "client")
		}
		if err := e.addPods(ctx, pods); err != nil {
			return err
		}
		addr := net.JoinHostPort(lab.OutsideAddr.String(), "80")
		// Each mode must be masqueraded: the server sees its node's address.
		for i, s := range e.specs {
			for _, m := range modes {
				if nodeMode[m] != s.mode {
					continue
				}
				var ans string
				err := netnsDo(e.pods["client-"+m].nsPath, func() error {
					var err error
					ans, _, err = connOnce(addr, 2*time.Second, true)
					return err
				})
				if err != nil {
					return fmt.Errorf("%s: connection to the outside world: %w", m, err)
				}
				idx, _ := lab.NodeIndex(e.nodes[i])
				if nodeIP := lab.NodeIP(idx).String(); !strings.Contains(ans, nodeIP) {
					return fmt.Errorf("%s: the outside world saw %q, not the node's address %s: not masqueraded", m, lastLine(ans), nodeIP)
				}
			}
		}
		for i := range r.opts.Repeats {
			for _, m := range rotate(modes, i) {
				r.p.status("masquerade rep %d/%d %s: %d connections to %s", i+1, r.opts.Repeats, m, r.opts.Conns, addr)
				st, err := connSeries(ctx, e.pods["client-"+m].nsPath, addr, r.opts.Conns, true)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !r.seriesOK(rep, st, err, tOutside, 0, m, fmt.Sprintf("%s rep %d", m, i+1)) {
					continue
				}
				rep.Add("connection rate", "conn/s", tOutside, 0, m, false, float64(len(st.lat))/st.elapsed.Seconds())
				rep.Add("p50 latency", "µs", tOutside, 0, m, true, Percentile(st.lat, 50))
				rep.Add("p99 latency", "µs", tOutside, 0, m, true, Percentile(st.lat, 99))
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		rep.Note("legacy = iptables MASQUERADE (and legacy host routing); ebpf = BPF masquerade (and BPF host routing); checked first that the outside server sees each node's address")
		return nil
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
