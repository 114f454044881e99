package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/api"
)

// newPolicyCmd is `glia policy`: what a node's agent enforces of the
// cluster's NetworkPolicies, computed by the same code its maps are
// written from.
func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Inspect the NetworkPolicy a node's agent enforces, and explain verdicts"}
	var out outputFlag
	client := func() (*api.Client, string, error) {
		sock, err := g.socketFor()
		if err != nil {
			return nil, "", err
		}
		return api.NewClient(sock), sock, nil
	}

	get := &cobra.Command{
		Use:     "get",
		Short:   "Show the cluster's NetworkPolicies and what each local endpoint enforces",
		Example: "  glia policy get --node lab-node-2",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, sock, err := client()
			if err != nil {
				return err
			}
			var doc api.PolicyDocument
			if err := c.Get(cmd.Context(), api.PathPolicy, &doc); err != nil {
				return fmt.Errorf("glia-agent at %s: %w", sock, err)
			}
			return out.print(cmd.OutOrStdout(), "PolicyDocument", doc, func(o io.Writer) error { return renderPolicyDoc(o, doc) })
		},
	}

	selectors := &cobra.Command{
		Use:     "selectors",
		Short:   "Show every selector of every NetworkPolicy and the identities it matches",
		Example: "  glia policy selectors --node lab-node-2",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, sock, err := client()
			if err != nil {
				return err
			}
			var sels []api.PolicySelector
			if err := c.Get(cmd.Context(), api.PathPolicySelectors, &sels); err != nil {
				return fmt.Errorf("glia-agent at %s: %w", sock, err)
			}
			return out.print(cmd.OutOrStdout(), "PolicySelectorList", sels, func(o io.Writer) error { return renderPolicySelectors(o, sels) })
		},
	}

	var from, to, port string
	trace := &cobra.Command{
		Use:   "trace",
		Short: "Say whether a connection is ALLOWED or DENIED, and which policy and rule decided",
		Long: `Trace one connection through the cluster's NetworkPolicies: the source
pod's egress policy, then the destination pod's ingress policy. --from and
--to are pods (namespace/name, or a name in default) or IPv4 addresses;
--port is N/proto (TCP, UDP or SCTP; TCP when left out). The exit status
is 0 when the connection is allowed and 1 when it is denied.`,
		Example: `  glia policy trace --node lab-node-1 --from curler --to default/web-1 --port 8081/TCP
  glia policy trace --node lab-node-1 --from 198.19.1.5 --to 198.19.2.7 --port 53/UDP`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" || port == "" {
				return usageErrorf("give --from, --to and --port (e.g. --from curler --to 198.19.2.7 --port 8081/TCP)")
			}
			c, sock, err := client()
			if err != nil {
				return err
			}
			v, err := c.PolicyTrace(cmd.Context(), from, to, port)
			if err != nil {
				return fmt.Errorf("glia-agent at %s: %w", sock, err)
			}
			if err := out.print(cmd.OutOrStdout(), "PolicyTrace", v, func(o io.Writer) error {
				for _, l := range v.Lines {
					fmt.Fprintln(o, l)
				}
				return nil
			}); err != nil {
				return err
			}
			if !v.Allowed {
				cmd.SilenceErrors, cmd.SilenceUsage = true, true
				return errDenied
			}
			return nil
		},
	}
	trace.Flags().StringVar(&from, "from", "", "source: pod (namespace/name) or IPv4 address")
	trace.Flags().StringVar(&to, "to", "", "destination: pod (namespace/name) or IPv4 address")
	trace.Flags().StringVar(&port, "port", "", "destination port, N/proto")

	for _, c := range []*cobra.Command{get, selectors, trace} {
		c.Flags().StringVar(&g.node, "node", "", "lab node to ask (lab-node-N)")
		addOutputFlag(c, &out, false)
		cmd.AddCommand(c)
	}
	return cmd
}

// errDenied is `glia policy trace`'s verdict DENIED: exit status 1, the
// explanation already printed.
var errDenied = fmt.Errorf("the connection is DENIED by network policy")

func renderPolicyDoc(out io.Writer, doc api.PolicyDocument) error {
	fmt.Fprintf(out, "Node %s: %d NetworkPolicies, %d identities; maps: %d ipcache, %d policy entries\n",
		doc.Node, len(doc.Policies), doc.Identities, doc.IPCacheEntries, doc.PolicyEntries)
	for _, p := range doc.Policies {
		fmt.Fprintf(out, "\nNetworkPolicy %s  podSelector %s  types %s\n", p.Name, p.PodSelector, strings.Join(p.Types, ","))
		for _, l := range p.Ingress {
			fmt.Fprintf(out, "  ingress: %s\n", l)
		}
		for _, l := range p.Egress {
			fmt.Fprintf(out, "  egress:  %s\n", l)
		}
	}
	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ENDPOINT\tPOD\tIDENTITY\tINGRESS\tEGRESS\tPOLICIES")
	iso := func(b bool) string {
		if b {
			return "isolated"
		}
		return "open"
	}
	for _, e := range doc.Endpoints {
		pols := strings.Join(e.Policies, ",")
		if e.Waiting != "" {
			pols += " (waiting: " + e.Waiting + ")"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.IP, e.Pod, e.Identity, iso(e.Ingress), iso(e.Egress), pols)
		for _, a := range e.Allows {
			fmt.Fprintf(w, "\t  allow %s\t%s\t%s\t\t%s\n", a.Direction, a.Peer, a.Port, a.Rule)
		}
	}
	return w.Flush()
}

func renderPolicySelectors(out io.Writer, sels []api.PolicySelector) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "POLICY\tWHERE\tSELECTOR\tIDENTITIES")
	for _, s := range sels {
		ids := strings.Join(s.Identities, ", ")
		if ids == "" {
			ids = "(none)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Policy, s.Where, s.Selector, ids)
	}
	return w.Flush()
}
