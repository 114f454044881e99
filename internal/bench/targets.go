package bench

import (
	"fmt"
	"math"
	"strings"
)

// target is one of the targets, evaluated on a report. Targets
// are ratios measured in one run: absolute times vary between machines.
type target struct {
	eval func(r *Report) TargetResult
}

// pointFor returns the number of Services a target is evaluated at: want
// if it was measured for every mode named, else the largest such number.
func pointFor(r *Report, metric, tgt string, want int, modes ...string) (int, bool) {
	best, found := -1, false
	for _, m := range r.Measurements {
		if m.Metric != metric || m.Target != tgt || m.Mode != modes[0] {
			continue
		}
		all := true
		for _, o := range modes[1:] {
			if _, ok := r.Median(metric, tgt, m.X, o); !ok {
				all = false
			}
		}
		if !all {
			continue
		}
		if m.X == want {
			return want, true
		}
		if m.X > best {
			best, found = m.X, true
		}
	}
	return best, found
}

func atText(n, want int) string {
	if want == 0 {
		return ""
	}
	if n == want {
		return fmt.Sprintf("at N=%d", n)
	}
	return fmt.Sprintf("at N=%d (N=%d not run)", n, want)
}

func status(ok bool) string {
	if ok {
		return StatusMet
	}
	return StatusMissed
}

// ratioTarget: mode better is at least min times better than worse on
// metric/tgt at N=want (or the largest N measured).
func ratioTarget(name, metric, tgt string, want int, better, worse string, min float64) target {
	return target{eval: func(r *Report) TargetResult {
		res := TargetResult{Name: name, Want: fmt.Sprintf("≥ %s", FormatRatio(min)), Got: "-", Status: StatusNotMeasured}
		n, ok := pointFor(r, metric, tgt, want, better, worse)
		if !ok {
			return res
		}
		b, _ := r.Median(metric, tgt, n, better)
		w, _ := r.Median(metric, tgt, n, worse)
		m := r.find(metric, tgt, n, better)
		ratio := Ratio(b, w, m.LowerIsBetter)
		res.Got = strings.TrimSpace(fmt.Sprintf("%s %s", FormatRatio(ratio), atText(n, want)))
		res.Status = status(ratio >= min)
		return res
	}}
}

// belowTarget: the median of metric/tgt for mode is below limit.
func belowTarget(name, metric, tgt string, want int, mode string, limit float64, unit string) target {
	return target{eval: func(r *Report) TargetResult {
		res := TargetResult{Name: name, Want: fmt.Sprintf("< %s %s", FormatValue(limit), unit), Got: "-", Status: StatusNotMeasured}
		n, ok := pointFor(r, metric, tgt, want, mode)
		if !ok {
			return res
		}
		v, _ := r.Median(metric, tgt, n, mode)
		res.Got = fmt.Sprintf("%s %s %s", FormatValue(v), unit, atText(n, want))
		res.Status = status(v < limit)
		return res
	}}
}

// flatTarget: mode's metric/tgt at N=want is within frac of its own
// figure at N=0.
func flatTarget(name, metric, tgt string, want int, mode string, frac float64) target {
	return target{eval: func(r *Report) TargetResult {
		res := TargetResult{Name: name, Want: fmt.Sprintf("≤ +%.0f%% over N=0", frac*100), Got: "-", Status: StatusNotMeasured}
		base, ok0 := r.Median(metric, tgt, 0, mode)
		n, ok := pointFor(r, metric, tgt, want, mode)
		if !ok0 || !ok || n == 0 {
			return res
		}
		v, _ := r.Median(metric, tgt, n, mode)
		growth := v/base - 1
		res.Got = fmt.Sprintf("%+.0f%% (%s vs %s µs) %s", growth*100, FormatValue(v), FormatValue(base), atText(n, want))
		res.Status = status(growth <= frac && !math.IsNaN(growth))
		return res
	}}
}

// nearTarget: mode's metric/tgt is within frac below reference's.
func nearTarget(name, metric, tgt, mode, reference string, frac float64) target {
	return target{eval: func(r *Report) TargetResult {
		res := TargetResult{Name: name, Want: fmt.Sprintf("≥ %.0f%% of %s", (1-frac)*100, reference), Got: "-", Status: StatusNotMeasured}
		v, ok := r.Median(metric, tgt, 0, mode)
		ref, ok2 := r.Median(metric, tgt, 0, reference)
		if !ok || !ok2 || ref == 0 {
			return res
		}
		res.Got = fmt.Sprintf("%.0f%% (%s vs %s)", v/ref*100, FormatValue(v), FormatValue(ref))
		res.Status = status(v >= ref*(1-frac))
		return res
	}}
}

const bigN = 10000

var scalingTargets = []target{
	flatTarget("eBPF per-connection p50 to the last Service at 10k Services, vs its own N=0", "p50 latency", tLast, bigN, ModeEBPF, 0.10),
	ratioTarget("eBPF vs kube-proxy iptables, p50 to the last Service at 10k Services", "p50 latency", tLast, bigN, ModeEBPF, ModeIPTables, 5),
}

var programmingTargets = []target{
	belowTarget("eBPF carries one endpoint change when 10k Services exist", "endpoint change", "", bigN, ModeEBPF, 10, "ms"),
	belowTarget("eBPF carries one more Service when 10k Services exist", "one more Service", "", bigN, ModeEBPF, 10, "ms"),
	ratioTarget("eBPF vs kube-proxy iptables, one endpoint change at 10k Services", "endpoint change", "", bigN, ModeEBPF, ModeIPTables, 50),
	ratioTarget("eBPF vs kube-proxy iptables, one more Service at 10k Services", "one more Service", "", bigN, ModeEBPF, ModeIPTables, 50),
}

var costTargets = []target{
	ratioTarget("eBPF agent vs legacy agent + kube-proxy, CPU under churn at 10k Services", "agent+kube-proxy CPU, churn", "", bigN, ModeEBPF, ModeIPTables, 5),
	belowTarget("eBPF agent idle CPU", "agent CPU, idle", "", bigN, ModeEBPF, 10, "millicores"),
}

var rrTargets = []target{
	ratioTarget("BPF vs legacy host routing, RR rate pod→pod across nodes", "RR rate", pathPodFar, 0, ModeEBPF, ModeLegacy, 1.3),
	ratioTarget("BPF vs legacy host routing, RR rate pod→pod same node", "RR rate", pathPodSame, 0, ModeEBPF, ModeLegacy, 1.3),
	nearTarget("BPF host routing RR rate pod→pod same node vs the bare veth floor", "RR rate", pathPodSame, ModeEBPF, ModeVethFloor, 0.15),
}

var masqTargets = []target{
	ratioTarget("BPF vs iptables masquerade, new connections per second", "connection rate", tOutside, 0, ModeEBPF, ModeLegacy, 1.2),
}
