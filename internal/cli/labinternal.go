package cli

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"glia.dev/glia/internal/lab/images"
	"glia.dev/glia/internal/lab/noderunner"
	"glia.dev/glia/internal/lab/podinit"
)

// newLabInternalCommands returns the hidden `glia lab` subcommands the lab
// starts by itself: the node runner, the container init, the container log
// shim and the built-in image programs.
func newLabInternalCommands() []*cobra.Command {
	cfg := noderunner.DefaultConfig()
	runner := &cobra.Command{
		Use:    "_runner",
		Short:  "Run the lab node runner (kubelet + container runtime stand-in) for one node",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			return noderunner.Run(ctx, log, cfg)
		},
	}
	cfg.Flags(runner.Flags())

	podInit := &cobra.Command{
		Use:                "_pod-init [flags] -- PROGRAM [ARGS...]",
		Short:              "Set up a lab container's mounts and hostname, then exec its program",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return podinit.Main(args)
		},
	}

	logShim := &cobra.Command{
		Use:                "_log-shim --log FILE --attach SOCKET --out-fd N [flags]",
		Short:              "Write a lab container's output to its CRI log and serve attach (started by the node runner)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return noderunner.ShimMain(args)
		},
	}

	image := &cobra.Command{
		Use:                "_image NAME [ARGS...]",
		Short:              "Run a built-in program of the lab image catalog",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("usage: glia lab _image NAME [ARGS...]")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return images.Run(ctx, args[0], args[1:], os.Stderr)
		},
	}
	return []*cobra.Command{runner, podInit, logShim, image}
}
