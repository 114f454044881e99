// Command glia-agent is glia's per-node agent.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"glia.dev/glia/internal/agent"
	"glia.dev/glia/internal/nodeinit"
)

func main() {
	// `glia-agent init ...` prepares the node (the DaemonSet's init containers).
	if len(os.Args) > 1 && os.Args[1] == "init" {
		os.Exit(runInit(os.Args[2:]))
	}
	var cfg agent.Config
	fs := pflag.NewFlagSet("glia-agent", pflag.ContinueOnError)
	cfg.Flags(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	// Info until the config is resolved; then the config key debug decides.
	cfg.LogLevel = new(slog.LevelVar)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, log, cfg); err != nil {
		log.Error("glia-agent failed", "error", err)
		fmt.Fprintln(os.Stderr, "glia-agent:", err)
		os.Exit(1)
	}
}

func runInit(args []string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := nodeinit.Run(args, os.Stderr, log); err != nil {
		fmt.Fprintln(os.Stderr, "glia-agent init:", err)
		if errors.Is(err, nodeinit.ErrUsage) {
			return 2
		}
		return 1
	}
	return 0
}
