package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/cluster"
	"glia.dev/glia/internal/lab"
	"glia.dev/glia/internal/version"
)

// clusterFlags say how to reach every agent of a cluster (internal/cluster).
type clusterFlags struct {
	kubeconfig string
	namespace  string
	timeout    time.Duration
}

func (f *clusterFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default: $KUBECONFIG, else the lab's while a lab is up, else ~/.kube/config)")
	fl.StringVarP(&f.namespace, "namespace", "n", cluster.DefaultNamespace, "namespace of the glia DaemonSet")
	fl.DurationVar(&f.timeout, "agent-timeout", cluster.DefaultTimeout, "how long to wait for each agent's answer")
}

// options are the cluster options of the flags; the lab's kubeconfig is
// the fallback while a lab is up.
func (f *clusterFlags) options() cluster.Options {
	o := cluster.Options{Kubeconfig: f.kubeconfig, Namespace: f.namespace, Timeout: f.timeout}
	if dir, err := binDir(); err == nil {
		if layout, err := lab.DefaultLayout(dir); err == nil {
			o.LabKubeconfig = layout.Kubeconfig()
		}
	}
	return o
}

// agentCommand is what runs in every agent's container: the image's glia,
// asking its own node's agent.
var agentStatusCommand = []string{"glia", "status", "-o", "json"}

// clusterStatuses asks every node's agent for its status.
func clusterStatuses(ctx context.Context, f clusterFlags) ([]agentStatus, error) {
	c, err := cluster.Open(f.options())
	if err != nil {
		return nil, err
	}
	res, err := cluster.RunJSON[api.Status](ctx, c, agentStatusCommand)
	if err != nil {
		return nil, fmt.Errorf("cluster (kubeconfig %s): %w", c.Source, err)
	}
	out := make([]agentStatus, len(res))
	for i, r := range res {
		out[i] = agentStatus{Node: r.Node, Pod: r.Pod}
		if r.Err != nil {
			out[i].Error = r.Err.Error()
			continue
		}
		s := r.Value
		out[i].Status = &s
	}
	return out, nil
}

func clusterAgentVersions(ctx context.Context, f clusterFlags) ([]agentVersion, error) {
	sts, err := clusterStatuses(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]agentVersion, len(sts))
	for i, s := range sts {
		out[i] = agentVersion{Node: s.Node, Error: s.Error}
		if s.Status != nil {
			v := s.Status.Version
			if v == "" {
				v = "unknown" // an agent older than its version field
			}
			out[i].Version, out[i].Commit, out[i].Datapath = v, s.Status.Commit, s.Status.Datapath
		}
	}
	return out, nil
}

// agentsFailed is the error of a cluster-wide command some agents did not
// answer: the answers are printed, the exit code says it failed.
func agentsFailed(total, failed int) error {
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d agents did not answer", failed, total)
}

const kindAgentStatusList = "AgentStatusList"

// agentStatus is one node's agent in `glia status --all-nodes`.
type agentStatus struct {
	Node string `json:"node"`
	Pod  string `json:"pod,omitempty"`
	// Error says why the agent did not answer; Status is nil then.
	Error  string      `json:"error,omitempty"`
	Status *api.Status `json:"status,omitempty"`
}

// renderClusterStatus is the text of `glia status --all-nodes`: one row per
// node, then each config warning once with the nodes it concerns, then the
// nodes that did not answer and why.
func renderClusterStatus(w io.Writer, rows []agentStatus) error {
	answered := 0
	for _, r := range rows {
		if r.Status != nil {
			answered++
		}
	}
	fmt.Fprintf(w, "Agents: %d/%d answered\n", answered, len(rows))
	err := renderTable(w, []string{"NODE", "MODE", "HOST ROUTING", "MASQUERADING", "KUBEPROXYREPLACEMENT", "HEALTH", "READY", "VERSION", "PODS"},
		len(rows), func(i int) []string {
			r := rows[i]
			s := r.Status
			if s == nil {
				return []string{r.Node, "-", "-", "-", "-", "-", "-", "-", "-"}
			}
			masq := orDash(s.Masquerading.Mode)
			if s.Masquerading.Mode == "BPF" && s.Masquerading.Device != "" {
				masq += " [" + s.Masquerading.Device + "]"
			}
			health := "-"
			if h := s.ClusterHealth; h != nil {
				health = fmt.Sprintf("%d/%d reachable", h.Reachable, h.Total)
			}
			ready := "Ready"
			if !s.Ready {
				ready = "Not ready"
			}
			v := orDash(s.Version)
			if s.Commit != "" {
				v += " (" + version.ShortCommit(s.Commit) + ")"
			}
			return []string{r.Node, orDash(s.Datapath), orDash(s.HostRouting.Mode), masq, trueFalse(s.KubeProxyReplacement.Enabled),
				health, ready, v, fmt.Sprint(s.Endpoints)}
		})
	if err != nil {
		return err
	}
	// The same warning on many nodes (a ConfigMap key) is printed once.
	nodesOf := map[string][]string{}
	var warnings []string
	for _, r := range rows {
		if r.Status == nil {
			continue
		}
		for _, msg := range r.Status.ConfigWarnings {
			if _, seen := nodesOf[msg]; !seen {
				warnings = append(warnings, msg)
			}
			nodesOf[msg] = append(nodesOf[msg], r.Node)
		}
	}
	for _, msg := range warnings {
		fmt.Fprintf(w, "Warning (%s): %s\n", strings.Join(nodesOf[msg], ", "), msg)
	}
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(w, "%s: did not answer: %s\n", r.Node, r.Error)
		}
	}
	return nil
}

// renderTable writes a header and n rows aligned in columns.
func renderTable(w io.Writer, header []string, n int, row func(i int) []string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for i := 0; i < n; i++ {
		fmt.Fprintln(tw, strings.Join(row(i), "\t"))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// errNoAgentNoCluster: `glia status` found neither a local agent nor a
// cluster.
var errNoAgentNoCluster = errors.New("no glia-agent socket at " + defaultSocket +
	" and no cluster to ask: give --node lab-node-N (the lab), --socket PATH (a node), or a kubeconfig " +
	"(--kubeconfig, KUBECONFIG) for every node's agent (--all-nodes)")
