package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"glia.dev/glia/internal/connectivity"
	"glia.dev/glia/internal/lab"
)

// newConnectivityCmd is `glia connectivity`: `test`, and the hidden
// conn-disrupt programs the test runs in its pods.
func newConnectivityCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "connectivity", Short: "Check the cluster's connectivity end to end"}
	cmd.AddCommand(newConnectivityTestCmd(), newConnServerCmd(), newConnClientCmd(), newPingCmd())
	return cmd
}

type connectivityFlags struct {
	kubeconfig      string
	tests           []string
	out             outputFlag
	verbose         bool
	keep            bool
	include         bool
	externalTargets []string
	setup, check    bool
	agentNamespace  string
	agentSelector   string
	agentSocket     string
	actionTimeout   time.Duration
	p               connectivity.Params
}

func newConnectivityTestCmd() *cobra.Command {
	f := &connectivityFlags{p: connectivity.DefaultParams()}
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Deploy test workloads, check every path between them and report",
		Long: `Deploys client, client2, echo-same-node, echo-other-node (placed by affinity
rules), a host-network DaemonSet and ClusterIP and NodePort Services into a
namespace of its own, checks every path (pod to pod on a node and across nodes,
Services and every backend, NodePorts, hairpin, pod to host and back, the world
with masquerade, ICMP, DNS), asks every glia-agent about the health of the
cluster and its drops, and reports. It exits non-zero when a test fails.

Against the lab (its kubeconfig, the default while a lab is up) commands run
through 'glia lab exec' and the outside namespace's server is the world; against
a real cluster they run through the Kubernetes exec API and --external-target
names the world.`,
		Example: `  glia connectivity test
  glia connectivity test --test pod-to-pod --test '!cross-node' -v
  glia connectivity test -o json
  glia connectivity test --include-conn-disrupt-test --conn-disrupt-setup   # before a change
  glia connectivity test --include-conn-disrupt-test --conn-disrupt-check   # after it`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runConnectivityTest(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG, else the lab's while a lab is up, else ~/.kube/config)")
	fl.StringVarP(&f.p.Namespace, "test-namespace", "n", f.p.Namespace, "namespace the test deploys into (created and deleted by the test)")
	fl.StringArrayVar(&f.tests, "test", nil, "run only tests whose name matches this regular expression; a leading ! excludes (repeatable)")
	addOutputFlag(cmd, &f.out, false)
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "print every action")
	fl.BoolVar(&f.keep, "keep-workloads", false, "leave the test's namespace and workloads in place at the end")
	fl.StringVar(&f.p.ExternalTarget, "external-target", "", "URL that pod-to-world fetches (default in the lab: http://198.18.64.10/, the outside namespace's server; elsewhere the test is skipped)")
	fl.StringVar(&f.p.EchoImage, "echo-image", f.p.EchoImage, "image of the echo pods (HTTP 'hello from <pod>' on --echo-port; needs curl for the hairpin test)")
	fl.StringVar(&f.p.ClientImage, "client-image", f.p.ClientImage, "image of the client pods (needs curl and ping)")
	fl.StringArrayVar(&f.p.ClientCommand, "client-command", f.p.ClientCommand, "command of the client pods")
	fl.StringVar(&f.p.HostImage, "host-image", f.p.HostImage, "image of the host-network DaemonSet (HTTP echo on --host-port; needs curl on real clusters)")
	fl.IntVar(&f.p.EchoPort, "echo-port", f.p.EchoPort, "port of the echo pods")
	fl.IntVar(&f.p.HostPort, "host-port", f.p.HostPort, "port of the host-network echo on every node")
	fl.StringVar(&f.p.ClusterDomain, "cluster-domain", f.p.ClusterDomain, "DNS domain of the cluster")
	fl.StringArrayVar(&f.p.ExpectedDropReasons, "expected-drop-reason", nil, "a glia_drops_total reason allowed to rise during the run (repeatable)")
	fl.DurationVar(&f.p.ReadyTimeout, "timeout", f.p.ReadyTimeout, "how long to wait for the workloads to be ready")
	fl.DurationVar(&f.actionTimeout, "action-timeout", 30*time.Second, "bound of each action")
	fl.StringVar(&f.agentNamespace, "agent-namespace", "glia-system", "namespace of the glia-agent pods (real clusters)")
	fl.StringVar(&f.agentSelector, "agent-selector", "k8s-app=glia-agent", "label selector of the glia-agent pods (real clusters)")
	fl.StringVar(&f.agentSocket, "agent-socket", "/var/run/glia/glia.sock", "the agent's API socket inside its pod (real clusters)")
	fl.BoolVar(&f.include, "include-conn-disrupt-test", false, "keep long-lived connections and a stream of new requests running between pods on different nodes and through a Service across the run, and fail on any interruption")
	fl.BoolVar(&f.setup, "conn-disrupt-setup", false, "with --include-conn-disrupt-test: only start the connections and record them, to check after a change")
	fl.BoolVar(&f.check, "conn-disrupt-check", false, "with --include-conn-disrupt-test: check the connections started by an earlier --conn-disrupt-setup")
	fl.StringVar(&f.p.ConnDisrupt.Image, "conn-disrupt-image", f.p.ConnDisrupt.Image, "image of the conn-disrupt pods (real clusters: must contain the glia binary)")
	fl.DurationVar(&f.p.ConnDisrupt.StallAfter, "conn-disrupt-stall", f.p.ConnDisrupt.StallAfter, "a long-lived connection silent for longer than this is stalled")
	fl.DurationVar(&f.p.ConnDisrupt.RequestInterval, "conn-disrupt-interval", f.p.ConnDisrupt.RequestInterval, "interval between new requests to each target")
	fl.StringArrayVar(&f.externalTargets, "conn-disrupt-external-target", nil, "with --conn-disrupt-setup: a conn-disrupt server outside the cluster (NAME=IP:PORT, repeatable) every client also holds connections to (the lab's: world=198.18.64.10:8000)")
	return cmd
}

func runConnectivityTest(cmd *cobra.Command, f *connectivityFlags) error {
	if (f.setup || f.check) && !f.include {
		return usageErrorf("--conn-disrupt-setup and --conn-disrupt-check go with --include-conn-disrupt-test")
	}
	if f.setup && f.check {
		return usageErrorf("--conn-disrupt-setup and --conn-disrupt-check are two runs: set up before the change, check after it")
	}
	if len(f.externalTargets) > 0 && (!f.include || f.check) {
		return usageErrorf("--conn-disrupt-external-target goes with --include-conn-disrupt-test (and --conn-disrupt-setup): the setup records the targets")
	}
	for _, x := range f.externalTargets {
		tgt, err := connectivity.ParseConnTarget(x)
		if err != nil {
			return asUsage(cmd, fmt.Errorf("--conn-disrupt-external-target: %w", err))
		}
		f.p.ConnDisrupt.ExternalTargets = append(f.p.ConnDisrupt.ExternalTargets, tgt)
	}
	filter, err := connectivity.ParseFilter(f.tests)
	if err != nil {
		return asUsage(cmd, err)
	}
	glia, err := os.Executable()
	if err != nil {
		return err
	}
	if glia, err = filepath.EvalSymlinks(glia); err != nil {
		return err
	}
	layout, err := lab.DefaultLayout(filepath.Dir(glia))
	if err != nil {
		return err
	}
	kc, isLab := resolveKubeconfig(f.kubeconfig, layout.Kubeconfig())
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: kc}, nil).ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w (is the lab up? glia lab up)", kc, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	p := f.p
	c := connectivity.Cluster{Client: cs}
	if isLab {
		c.Exec = connectivity.LabExecutor{Glia: glia}
		c.Agents = connectivity.SocketAgents{Socket: layout.AgentSocket}
		if p.ExternalTarget == "" {
			p.ExternalTarget = "http://" + lab.OutsideAddr.String() + "/"
			c.WorldSourceIsNode = true
		}
		// The lab machine need not have ping: use glia's, which the lab's
		// client image has at /usr/bin/glia (as the glia image does) — the
		// path of this binary on the host may be hidden in the container
		// (its /tmp and /run are its own).
		p.PingCommand = []string{"glia", "connectivity", "_ping", "--timeout", "3s"}
	} else {
		ke := &connectivity.KubeExecutor{Client: cs, Config: cfg, HostNamespace: p.Namespace,
			HostSelector: "name=" + connectivity.NameHostNetns}
		c.Exec = ke
		c.Agents = connectivity.ExecAgents{Exec: ke, Client: cs, Namespace: f.agentNamespace,
			Selector: f.agentSelector, Socket: f.agentSocket}
	}
	o := connectivity.RunOptions{Params: p, Filter: filter, Verbose: f.verbose, Keep: f.keep, ActionTimeout: f.actionTimeout}
	switch {
	case f.setup:
		o.ConnDisrupt = connectivity.ConnDisruptSetupOnly
	case f.check:
		o.ConnDisrupt = connectivity.ConnDisruptCheck
	case f.include:
		o.ConnDisrupt = connectivity.ConnDisruptInclude
	}
	stdout := cmd.OutOrStdout()
	o.Progress = stdout
	if !f.out.text() {
		o.Progress = cmd.ErrOrStderr()
	}
	fmt.Fprintf(o.Progress, "ℹ️  [%s] cluster %s (kubeconfig %s%s)\n", p.Namespace, cfg.Host, kc, map[bool]string{true: ", the lab"}[isLab])
	rep, err := connectivity.Run(cmd.Context(), c, o)
	if rep != nil {
		perr := f.out.print(stdout, kindConnectivityReport, rep, func(w io.Writer) error {
			connectivity.RenderText(w, rep)
			return nil
		})
		err = errors.Join(err, perr)
	}
	if err != nil {
		return err
	}
	if rep != nil && !rep.Summary.Success {
		return fmt.Errorf("%w: %s", connectivity.ErrFailed, rep.Line)
	}
	return nil
}

const kindConnectivityReport = "ConnectivityReport"

// resolveKubeconfig picks the kubeconfig: the flag, else $KUBECONFIG, else
// the lab's when it exists, else ~/.kube/config; it says whether that is the
// lab's.
func resolveKubeconfig(flag, labKC string) (string, bool) {
	kc := flag
	if kc == "" {
		kc = os.Getenv("KUBECONFIG")
	}
	if kc == "" {
		if _, err := os.Stat(labKC); err == nil {
			kc = labKC
		}
	}
	if kc == "" {
		home, _ := os.UserHomeDir()
		kc = filepath.Join(home, ".kube", "config")
	}
	a, err1 := os.Stat(kc)
	b, err2 := os.Stat(labKC)
	return kc, err1 == nil && err2 == nil && os.SameFile(a, b)
}

func newConnServerCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:    "_conn-server",
		Hidden: true,
		Short:  "The conn-disrupt server: keeps connections open with a tick every 100ms, answers requests",
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			name, _ := os.Hostname()
			if h := os.Getenv("HOSTNAME"); h != "" {
				name = h
			}
			return connectivity.RunConnServer(ctx, log, listen, name)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", ":8000", "address to listen on")
	return cmd
}

func newConnClientCmd() *cobra.Command {
	cfg := connectivity.ConnClientConfig{WriteInterval: 250 * time.Millisecond}
	var targets []string
	cmd := &cobra.Command{
		Use:    "_conn-client",
		Hidden: true,
		Short:  "The conn-disrupt client: long-lived connections and new requests to each target, interruptions recorded in --state",
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, t := range targets {
				ct, err := connectivity.ParseConnTarget(t)
				if err != nil {
					return err
				}
				cfg.Targets = append(cfg.Targets, ct)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			return connectivity.RunConnClient(ctx, log, cfg)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Name, "name", "", "the client's name")
	fl.StringVar(&cfg.StatePath, "state", "", "state file, rewritten every 250ms")
	fl.StringArrayVar(&targets, "target", nil, "NAME=IP:PORT (repeatable)")
	fl.DurationVar(&cfg.RequestInterval, "request-interval", 200*time.Millisecond, "interval between new requests to each target")
	fl.DurationVar(&cfg.StallAfter, "stall-after", time.Second, "silence after which a long-lived connection is stalled")
	fl.DurationVar(&cfg.RequestTimeout, "request-timeout", 2*time.Second, "bound of one request")
	return cmd
}

func newPingCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:    "_ping ADDRESS",
		Hidden: true,
		Short:  "Send one ICMP echo request and wait for the reply (the lab's ping)",
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dst, err := netip.ParseAddr(args[0])
			if err != nil {
				return err
			}
			rtt, err := connectivity.Ping(cmd.Context(), dst, timeout)
			if err != nil {
				return err
			}
			fmt.Printf("reply from %s: time=%s\n", dst, rtt)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "how long to wait for the reply")
	return cmd
}
