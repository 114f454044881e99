package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/health"
)

const kindHealthReport = "HealthReport"

func newHealthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "health", Short: "Cluster connectivity as one node's agent probes it"}
	var verbose bool
	var out outputFlag
	st := &cobra.Command{
		Use:   "status",
		Short: "Show every node's host and health-endpoint reachability (ICMP to stack, HTTP to agent)",
		Example: `  glia health status --node lab-node-1
  glia health status --node lab-node-1 -v
  glia health status --node lab-node-1 -o jsonpath='{range .nodes[*]}{.name}{" "}{.host.icmp.ok}{"\n"}{end}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sock, err := g.socketFor()
			if err != nil {
				return err
			}
			var rep health.Report
			if err := api.NewClient(sock).Health(cmd.Context(), &rep); err != nil {
				return fmt.Errorf("glia-agent at %s: %w", sock, err)
			}
			return out.print(cmd.OutOrStdout(), kindHealthReport, &rep, func(w io.Writer) error {
				return health.Render(w, rep, verbose)
			})
		},
	}
	st.Flags().StringVar(&g.node, "node", "", "lab node to ask (lab-node-N)")
	st.Flags().BoolVarP(&verbose, "verbose", "v", false, "every node's host and endpoint connectivity with RTTs")
	addOutputFlag(st, &out, false)
	cmd.AddCommand(st)
	return cmd
}
