package bench

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"glia.dev/glia/internal/lab"
	"glia.dev/glia/internal/netnsfile"
)

const tOutside = "pod→outside world (198.18.64.10)"

// runMasquerade: from a pod on a legacy node (iptables MASQUERADE) and one
// on an eBPF node (BPF masquerade), new connections (connect, request,
// close) to a server in the outside namespace; modes interleaved. Each
// mode is first checked to be masqueraded: the lab's web server there
// answers with the source address it saw.
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
					ans, _, err = connOnce(addr, 0, 2*time.Second, true)
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
		// The series go to glia bench's own server in the outside world:
		// one request line, its name back, as in service-scaling. Behind
		// the lab's web server, Go's HTTP machinery would cost each
		// connection as much as the masquerading being measured.
		if err := e.serveIn(filepath.Join(netnsfile.Dir, lab.OutsideNetns), "outside-world"); err != nil {
			return err
		}
		addr = net.JoinHostPort(lab.OutsideAddr.String(), strconv.Itoa(portConn))
		for i := range r.opts.Repeats {
			for _, m := range rotate(modes, i) {
				r.p.status("masquerade rep %d/%d %s: %d connections to %s", i+1, r.opts.Repeats, m, r.opts.Conns, addr)
				st, err := connSeries(ctx, e.pods["client-"+m].nsPath, addr, r.opts.Conns, false)
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
		rep.Note("legacy = iptables MASQUERADE (and legacy host routing); ebpf = BPF masquerade (and BPF host routing); checked first that the outside web server sees each node's address; the series then go to glia bench's line server on %s", addr)
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
