// Package cli implements the glia command line.
package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/lab"
)

// Run runs the glia CLI with args. ExitCode turns its error into the exit
// code: ExitUsage for a command line glia cannot run, ExitFailure for a
// failure of what was asked.
func Run(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var u *UsageError
	if errors.As(err, &u) && u.Command == "" && cmd != nil {
		u.Command = cmd.CommandPath()
	}
	return err
}

// globals are the options every command shares.
type globals struct {
	socket string // agent socket; default: the lab node's, or /var/run/glia/glia.sock
	node   string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "glia",
		Short: "glia: eBPF networking for Kubernetes",
		Long: `glia: eBPF networking for Kubernetes.

Commands that print objects take -o text|json|yaml|jsonpath=TEMPLATE. Exit
codes: 0 success, 1 what was asked failed, 2 the command line is wrong.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.socket, "socket", "", "glia-agent API socket (default: the lab node's socket with --node, else /var/run/glia/glia.sock)")
	root.AddCommand(newStatusCmd(g), newLabCmd(), newEndpointCmd(g), newHealthCmd(g), newBPFCmd(g), newConfigCmd(g),
		newConnectivityCmd(g), newServiceCmd(g), newPolicyCmd(g), newBenchCmd(), newVersionCmd())
	markUsageErrors(root)
	return root
}

// logger is the CLI's logger: warnings and errors only, on stderr.
func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// binDir is the directory of the running glia binary: the lab finds its
// other binaries there.
func binDir() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		return "", err
	}
	return filepath.Dir(exe), nil
}

func newLab() (*lab.Lab, error) {
	dir, err := binDir()
	if err != nil {
		return nil, err
	}
	layout, err := lab.DefaultLayout(dir)
	if err != nil {
		return nil, err
	}
	return lab.New(logger(), layout, os.Stdout), nil
}

// socketFor finds the agent socket for the command: --socket, or the lab
// node's with --node, or the default path of a real node.
func (g *globals) socketFor() (string, error) {
	if g.socket != "" {
		return g.socket, nil
	}
	if g.node != "" {
		l, err := newLab()
		if err != nil {
			return "", err
		}
		if _, err := lab.NodeIndex(g.node); err != nil {
			return "", usageErrorf("--node %q: %w", g.node, err)
		}
		p := l.Layout().AgentSocket(g.node)
		if _, err := os.Stat(p); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("no glia-agent socket for %s at %s: is the lab up and the agent running? (glia lab status)", g.node, p)
			}
			return "", err
		}
		return p, nil
	}
	return defaultSocket, nil
}

// defaultSocket is the agent's socket on a real node (and in its pod).
const defaultSocket = "/var/run/glia/glia.sock"
