package health

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"
)

// Render prints the report for `glia health status`. Verbose prints every
// node and probe as cilium-health status does, line for line ("ICMP to
// stack: OK, RTT=860.424µs": one space after each colon, so the lines users
// grep for match; TestStoryLines pins them to the story's); both forms end
// with the "Cluster health:" line and one line per unreachable node naming
// what failed.
func Render(w io.Writer, rep Report, verbose bool) error {
	bw := bufio.NewWriter(w)
	nodes := append([]NodeStatus(nil), rep.Nodes...)
	sortNodes(nodes)
	if verbose {
		if rep.ProbeTime.IsZero() {
			fmt.Fprintf(bw, "Probe time: never\n")
		} else {
			fmt.Fprintf(bw, "Probe time: %s\n", formatTime(rep.ProbeTime))
		}
		fmt.Fprintf(bw, "Nodes:\n")
		for _, n := range nodes {
			name := n.Name
			if n.Local {
				name += " (localhost)"
			}
			fmt.Fprintf(bw, "  %s:\n", name)
			renderPath(bw, "Host", &n.Host)
			if n.Endpoint == nil {
				fmt.Fprintf(bw, "    Endpoint connectivity: no health endpoint address (the node has no pod CIDR)\n")
			} else {
				renderPath(bw, "Endpoint", n.Endpoint)
			}
		}
	}
	if rep.ProbeTime.IsZero() {
		fmt.Fprintf(bw, "Cluster health: no probe round completed yet\n")
		return bw.Flush()
	}
	s := rep.Summary()
	fmt.Fprintf(bw, "Cluster health: %d/%d reachable (%s)\n", s.Reachable, s.Total, formatTime(s.ProbeTime))
	for _, n := range nodes {
		if !n.Reachable() {
			fmt.Fprintf(bw, "  %s: %s\n", n.Name, strings.Join(n.Problems(), "; "))
		}
	}
	return bw.Flush()
}

func renderPath(w io.Writer, what string, p *PathStatus) {
	fmt.Fprintf(w, "    %s connectivity to %s:\n", what, p.Addr)
	fmt.Fprintf(w, "      %s: %s\n", ICMPName, resultText(p.ICMP))
	fmt.Fprintf(w, "      %s: %s\n", HTTPName, resultText(p.HTTP))
}

func resultText(r ProbeResult) string {
	if r.OK {
		return "OK, RTT=" + r.RTT.String()
	}
	return "FAILED: " + errText(r.Err)
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
