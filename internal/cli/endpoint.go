package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/api"
)

const kindEndpointList = "EndpointList"

func newEndpointCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Inspect the endpoints (pod interfaces) of a node"}
	var out outputFlag
	list := &cobra.Command{
		Use:   "list",
		Short: "List a node's endpoints",
		Example: `  glia endpoint list --node lab-node-2
  glia endpoint list --node lab-node-2 -o jsonpath='{.items[*].ip}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sock, err := g.socketFor()
			if err != nil {
				return err
			}
			eps, err := api.NewClient(sock).ListEndpoints(cmd.Context())
			if err != nil {
				return fmt.Errorf("glia-agent at %s: %w", sock, err)
			}
			return out.print(cmd.OutOrStdout(), kindEndpointList, eps, func(w io.Writer) error { return renderEndpointList(w, eps) })
		},
	}
	list.Flags().StringVar(&g.node, "node", "", "lab node to ask (lab-node-N)")
	addOutputFlag(list, &out, false)
	cmd.AddCommand(list)
	return cmd
}

func renderEndpointList(out io.Writer, eps []api.Endpoint) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "POD\tIPv4\tHOST IF\tCONTAINER\tIF")
	for _, ep := range eps {
		pod := ep.PodNamespace + "/" + ep.PodName
		if ep.PodName == "" {
			pod = "-"
		}
		cid := ep.ContainerID
		if len(cid) > 12 {
			cid = cid[:12]
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", pod, ep.IP, ep.HostIfName, cid, ep.IfName)
	}
	return w.Flush()
}
