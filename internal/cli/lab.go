package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"glia.dev/glia/internal/connectivity"
	"glia.dev/glia/internal/lab"
	"glia.dev/glia/internal/lab/noderunner"
)

func newLabCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A real Kubernetes cluster on this machine, networked by glia",
		Long: `The lab runs the real Kubernetes control plane in the root network namespace
(on the lab bridge, 198.18.0.1) and each node as a network namespace with a
glia-agent and the lab node runner. Nothing it sends leaves this machine.`,
	}
	cmd.AddCommand(newLabUpCmd(), newLabDownCmd(), newLabStatusCmd(), newLabExecCmd(),
		newLabKubeconfigCmd(), newLabAgentCmd(), newLabOutsideCmd())
	cmd.AddCommand(newLabInternalCommands()...)
	return cmd
}

func newLabUpCmd() *cobra.Command {
	var nodes int
	var set []string
	var labels, apply []string
	var chart string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build the lab (removing leftovers of an earlier one first)",
		Example: `  glia lab up --nodes 3
  glia lab up --nodes 3 --set kubeProxyReplacement=true --set bpf.masquerade=true
  glia lab up --nodes 3 --set kube-proxy-replacement=true --set enable-bpf-masquerade=true`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := lab.UpOptions{Nodes: nodes, Set: map[string]string{}, NodeLabels: map[string]map[string]string{}, Chart: chart}
			for _, kv := range set {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--set %q: use key=value, e.g. --set enable-bpf-masquerade=true", kv)
				}
				o.Set[k] = v
			}
			for _, s := range labels {
				node, kv, ok := strings.Cut(s, ":")
				k, v, ok2 := strings.Cut(kv, "=")
				if !ok || !ok2 || k == "" {
					return fmt.Errorf("--node-label %q: use NODE:key=value, e.g. --node-label lab-node-2:io.glia.enable-ebpf=true", s)
				}
				if o.NodeLabels[node] == nil {
					o.NodeLabels[node] = map[string]string{}
				}
				o.NodeLabels[node][k] = v
			}
			for _, f := range apply {
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("--apply: %w", err)
				}
				o.Apply = append(o.Apply, b)
			}
			l, err := newLab()
			if err != nil {
				return err
			}
			return l.Up(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes (lab-node-1 … lab-node-N)")
	cmd.Flags().StringArrayVar(&set, "set", nil, "a value of the glia Helm chart (kubeProxyReplacement=true) or a glia config key (kube-proxy-replacement=true), passed to helm install (repeatable)")
	cmd.Flags().StringArrayVar(&labels, "node-label", nil, "label a node at registration: NODE:key=value (repeatable)")
	cmd.Flags().StringArrayVar(&apply, "apply", nil, "manifest to apply before the nodes start, e.g. a GliaNodeConfig (repeatable)")
	cmd.Flags().StringVar(&chart, "chart", "", "install this chart directory instead of glia's own (an earlier release's, to try an upgrade)")
	return cmd
}

func newLabDownCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove everything the lab made: processes, namespaces, links, routes, pins, mounts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := newLab()
			if err != nil {
				return err
			}
			return l.Down(cmd.Context())
		},
	}
}

func newLabStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the lab's processes and nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := newLab()
			if err != nil {
				return err
			}
			return l.Status(cmd.Context(), os.Stdout)
		},
	}
}

func newLabKubeconfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the lab's kubeconfig (export KUBECONFIG=$(glia lab kubeconfig))",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := newLab()
			if err != nil {
				return err
			}
			p := l.Layout().Kubeconfig()
			if _, err := os.Stat(p); err != nil {
				return lab.ErrNoLab
			}
			fmt.Println(p)
			return nil
		},
	}
}

func newLabAgentCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "agent stop|start|restart|kill NODE",
		Short: "Stop, start, restart (delete the pod) or SIGKILL a node's glia agent pod",
		Example: `  glia lab agent restart lab-node-2
  glia lab agent kill lab-node-1 && glia lab agent start lab-node-1`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := newLab()
			if err != nil {
				return err
			}
			return l.AgentAction(cmd.Context(), args[0], args[1])
		},
	}
}

func newLabExecCmd() *cobra.Command {
	var node, namespace string
	cmd := &cobra.Command{
		Use:   "exec [POD] -- CMD [ARGS...]",
		Short: "Run a command inside a pod (its network, mount and UTS namespaces) or a node",
		Example: `  glia lab exec curler -- curl -s http://simple-webserver-service:8081
  glia lab exec --node lab-node-1 -- ip route`,
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash < 0 || dash >= len(args) {
				return errors.New("give the command after --, e.g. glia lab exec POD -- hostname")
			}
			target, command := args[:dash], args[dash:]
			l, err := newLab()
			if err != nil {
				return err
			}
			var nsArgs []string
			var attr *syscall.SysProcAttr
			switch {
			case node != "" && len(target) == 0:
				if _, err := lab.NodeIndex(node); err != nil {
					return err
				}
				mnt, err := l.NodeMountNS(node)
				if err != nil {
					return err
				}
				// The node's network and mount namespaces: its own
				// /etc/cni/net.d, /var/run/glia, /sys/fs/bpf, …
				nsArgs = []string{"--net=/var/run/netns/" + lab.NodeNetns(node), "--mount=" + mnt}
				// Run it as a process of the node: in the node's cgroup too,
				// so node-level hooks (socket load balancing) see it.
				cg := filepath.Join(l.Layout().NodeCgroup(node), "_exec")
				if err := os.MkdirAll(cg, 0o755); err != nil {
					return fmt.Errorf("node cgroup: %w", err)
				}
				fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("node cgroup: %w", err)
				}
				defer unix.Close(fd)
				attr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
			case node == "" && len(target) == 1:
				ns, name := namespace, target[0]
				if a, b, ok := strings.Cut(target[0], "/"); ok {
					ns, name = a, b
				}
				cs, _, err := l.Clients()
				if err != nil {
					return err
				}
				pod, err := cs.CoreV1().Pods(ns).Get(cmd.Context(), name, metav1.GetOptions{})
				if err != nil {
					return fmt.Errorf("pod %s/%s: %w", ns, name, err)
				}
				if pod.Spec.NodeName == "" {
					return fmt.Errorf("pod %s/%s is not scheduled yet", ns, name)
				}
				pid, err := noderunner.FindPodPID(l.Layout().RunnerStateDir(pod.Spec.NodeName), ns, name)
				if err != nil {
					return fmt.Errorf("pod %s/%s on %s: %w", ns, name, pod.Spec.NodeName, err)
				}
				nsArgs = []string{"-t", fmt.Sprint(pid), "-n", "-m", "-u"}
			default:
				return errors.New("name one pod, or --node NODE, before --")
			}
			c := exec.CommandContext(cmd.Context(), "nsenter", append(append(nsArgs, "--"), command...)...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
			c.SysProcAttr = attr
			if err := c.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					os.Exit(ee.ExitCode())
				}
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "run in a node's network and mount namespaces instead of a pod")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "the pod's namespace")
	return cmd
}

func newLabOutsideCmd() *cobra.Command {
	var listen, connListen string
	cmd := &cobra.Command{
		Use:    "_outside-server",
		Hidden: true,
		Short:  "The outside world's web server and conn-disrupt server (run by the lab in its outside namespace)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			errs := make(chan error, 2)
			go func() { errs <- lab.ServeOutside(ctx, listen) }()
			n := 1
			if connListen != "" {
				n++
				log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
				go func() { errs <- connectivity.RunConnServer(ctx, log, connListen, "outside") }()
			}
			// Either server ending ends both.
			err := <-errs
			cancel()
			for ; n > 1; n-- {
				err = errors.Join(err, <-errs)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "198.18.64.10:80", "address to serve on")
	cmd.Flags().StringVar(&connListen, "conn-disrupt-listen", "", "address of the conn-disrupt server for long-lived connections from pods (none when empty)")
	return cmd
}
