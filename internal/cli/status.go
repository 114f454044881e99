package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/api"
	"glia.dev/glia/internal/cluster"
	"glia.dev/glia/internal/status"
)

const kindStatus = "Status"

func newStatusCmd(g *globals) *cobra.Command {
	var verbose, allNodes bool
	var out outputFlag
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the state of a node's glia-agent and datapath, or of every node's",
		Long: `status shows one agent's state, line by line as 'cilium status' does: the
agent of --node (the lab), of --socket, or of this node (` + defaultSocket + `,
as inside the agent's pod).

With --all-nodes — or with none of those and a cluster to ask (--kubeconfig,
KUBECONFIG, the lab's while a lab is up, ~/.kube/config) — it asks every
node's agent through the Kubernetes API (pods/exec of DaemonSet glia, as
'kubectl exec' does) and prints one row per node. Nodes whose agent did not
answer are named with the reason, and the command exits 1.`,
		Example: `  glia status --node lab-node-2
  glia status --node lab-node-2 --verbose
  glia status --node lab-node-2 -o jsonpath='{.hostRouting.mode}'
  glia status --all-nodes
  glia status --all-nodes -o jsonpath='{range .items[*]}{.node}{" "}{.status.hostRouting.mode}{"\n"}{end}'
  kubectl -n glia-system exec ds/glia -- glia status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if allNodes && (g.node != "" || g.socket != "") {
				return usageErrorf("--all-nodes asks every node's agent: drop --node and --socket")
			}
			if allNodes || (g.node == "" && g.socket == "" && !exists(defaultSocket)) {
				if !allNodes {
					if _, _, err := cluster.FindKubeconfig(cf.options()); errors.Is(err, cluster.ErrNoKubeconfig) {
						return errNoAgentNoCluster
					}
				}
				rows, err := clusterStatuses(cmd.Context(), cf)
				if err != nil {
					return err
				}
				if err := out.print(w, kindAgentStatusList, rows, func(w io.Writer) error { return renderClusterStatus(w, rows) }); err != nil {
					return err
				}
				failed := 0
				for _, r := range rows {
					if r.Status == nil {
						failed++
					}
				}
				return agentsFailed(len(rows), failed)
			}
			sock, err := g.socketFor()
			if err != nil {
				return err
			}
			var s api.Status
			if err := api.NewClient(sock).Status(cmd.Context(), &s); err != nil {
				return fmt.Errorf("glia-agent at %s: %w", sock, err)
			}
			return out.print(w, kindStatus, &s, func(w io.Writer) error {
				return status.Render(w, &s, verbose)
			})
		},
	}
	cmd.Flags().StringVar(&g.node, "node", "", "lab node to ask (lab-node-N)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "add reasons, fixes and per-subsystem detail")
	cmd.Flags().BoolVar(&allNodes, "all-nodes", false, "ask every node's agent through the Kubernetes API and print one row per node")
	cf.add(cmd)
	addOutputFlag(cmd, &out, false)
	return cmd
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
