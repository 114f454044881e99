package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/api"
)

const kindServiceList = "ServiceList"

func newServiceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "Inspect the Services a node's agent load-balances"}
	var out outputFlag
	list := &cobra.Command{
		Use:   "list",
		Short: "List every Service frontend and its backends, as the node's agent programs them",
		Example: `  glia service list --node lab-node-2
  glia service list --node lab-node-2 -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sock, err := g.socketFor()
			if err != nil {
				return err
			}
			svcs, err := api.NewClient(sock).Services(cmd.Context())
			if err != nil {
				return fmt.Errorf("glia-agent at %s: %w", sock, err)
			}
			return out.print(cmd.OutOrStdout(), kindServiceList, svcs, func(w io.Writer) error { return renderServiceList(w, svcs) })
		},
	}
	list.Flags().StringVar(&g.node, "node", "", "lab node to ask (lab-node-N)")
	addOutputFlag(list, &out, false)
	cmd.AddCommand(list)
	return cmd
}

func renderServiceList(out io.Writer, svcs []api.Service) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tTYPE\tFRONTEND\tNODEPORT\tBACKENDS")
	for _, s := range svcs {
		np := "-"
		if s.NodePort != 0 {
			np = fmt.Sprint(s.NodePort)
		}
		first := true
		line := func(b string) {
			if first {
				fmt.Fprintf(w, "%s\t%s\t%s/%s\t%s\t%s\n", s.Name, s.Type, s.Frontend, s.Protocol, np, b)
				first = false
				return
			}
			fmt.Fprintf(w, "\t\t\t\t%s\n", b)
		}
		if len(s.Backends) == 0 {
			line("(none: connections are rejected)")
		}
		for _, b := range s.Backends {
			state := "active"
			switch {
			case b.Terminating:
				state = "terminating"
			case !b.Ready:
				state = "not ready"
			}
			line(fmt.Sprintf("%s (%s, %s)", b.Address, state, b.Node))
		}
	}
	return w.Flush()
}
