package cli

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/health"
)

func newHealthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "health", Short: "Cluster connectivity as one node's agent probes it"}
	var verbose bool
	var output string
	st := &cobra.Command{
		Use:   "status",
		Short: "Show every node's host and health-endpoint reachability (ICMP to stack, HTTP to agent)",
		Example: `  glia health status --node lab-node-1
  glia health status --node lab-node-1 -v`,
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
			switch output {
			case "json":
				e := json.NewEncoder(os.Stdout)
				e.SetIndent("", "  ")
				return e.Encode(rep)
			case "", "text":
				return health.Render(os.Stdout, rep, verbose)
			default:
				return fmt.Errorf("-o %q: use text or json", output)
			}
		},
	}
	st.Flags().StringVar(&g.node, "node", "", "lab node to ask (lab-node-N)")
	st.Flags().BoolVarP(&verbose, "verbose", "v", false, "every node's host and endpoint connectivity with RTTs")
	st.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.AddCommand(st)
	return cmd
}
