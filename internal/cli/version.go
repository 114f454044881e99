package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/version"
)

const kindVersion = "Version"

// versionReport is what `glia version` prints: the client's build and,
// with --cluster, every agent's.
type versionReport struct {
	Client version.Info `json:"client"`
	// Agents is every node's agent (with --cluster), sorted by node.
	Agents []agentVersion `json:"agents,omitempty"`
}

// agentVersion is one node's agent as it reports itself.
type agentVersion struct {
	Node     string `json:"node"`
	Version  string `json:"version,omitempty"`
	Commit   string `json:"commit,omitempty"`
	Datapath string `json:"datapath,omitempty"`
	// Error says why the agent did not answer.
	Error string `json:"error,omitempty"`
}

func newVersionCmd() *cobra.Command {
	var out outputFlag
	var cf clusterFlags
	var all bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of glia and, with --cluster, of every node's agent",
		Example: `  glia version
  glia version --cluster
  glia version --cluster -o jsonpath='{range .agents[*]}{.node}{" "}{.version}{"\n"}{end}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep := versionReport{Client: version.Get()}
			var failed error
			if all {
				agents, err := clusterAgentVersions(cmd.Context(), cf)
				if err != nil {
					return err
				}
				rep.Agents, failed = agents, agentsFailed(len(agents), countErrors(agents))
			}
			if err := out.print(cmd.OutOrStdout(), kindVersion, rep, func(w io.Writer) error { return renderVersion(w, rep, all) }); err != nil {
				return err
			}
			return failed
		},
	}
	cmd.Flags().BoolVar(&all, "cluster", false, "also ask every node's glia-agent (through the Kubernetes API: pods/exec of DaemonSet glia)")
	cf.add(cmd)
	addOutputFlag(cmd, &out, false)
	return cmd
}

func countErrors(as []agentVersion) int {
	n := 0
	for _, a := range as {
		if a.Error != "" {
			n++
		}
	}
	return n
}

func renderVersion(w io.Writer, rep versionReport, cluster bool) error {
	c := rep.Client
	fmt.Fprintf(w, "glia (client): %s commit %s %s %s\n", c.Version, c.Short(), c.GoVersion, c.Platform)
	if !cluster {
		return nil
	}
	return renderTable(w, []string{"NODE", "VERSION", "COMMIT", "DATAPATH"}, len(rep.Agents), func(i int) []string {
		a := rep.Agents[i]
		if a.Error != "" {
			return []string{a.Node, "-", "-", "did not answer: " + a.Error}
		}
		return []string{a.Node, a.Version, version.ShortCommit(a.Commit), a.Datapath}
	})
}
