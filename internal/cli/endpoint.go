package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/api"
)

func newEndpointCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Inspect the endpoints (pod interfaces) of a node"}
	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List a node's endpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sock, err := g.socketFor()
			if err != nil {
				return err
			}
			eps, err := api.NewClient(sock).ListEndpoints(cmd.Context())
			if err != nil {
				return fmt.Errorf("glia-agent at %s: %w", sock, err)
			}
			if output == "json" {
				e := json.NewEncoder(os.Stdout)
				e.SetIndent("", "  ")
				return e.Encode(eps)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
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
		},
	}
	list.Flags().StringVar(&g.node, "node", "", "lab node to ask (lab-node-N)")
	list.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.AddCommand(list)
	return cmd
}
