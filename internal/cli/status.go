package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/status"
)

func newStatusCmd(g *globals) *cobra.Command {
	var verbose bool
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the state of a node's glia-agent and datapath",
		Example: `  glia status --node lab-node-2
  glia status --node lab-node-2 --verbose
  glia status --node lab-node-2 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sock, err := g.socketFor()
			if err != nil {
				return err
			}
			var s api.Status
			if err := api.NewClient(sock).Status(cmd.Context(), &s); err != nil {
				return fmt.Errorf("glia-agent at %s: %w", sock, err)
			}
			switch output {
			case "json":
				return status.RenderJSON(os.Stdout, &s)
			case "", "text":
				return status.Render(os.Stdout, &s, verbose)
			default:
				return fmt.Errorf("-o %q: use text or json", output)
			}
		},
	}
	cmd.Flags().StringVar(&g.node, "node", "", "lab node to ask (lab-node-N)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "add reasons, fixes and per-subsystem detail")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
