// Command glia-agent is glia's per-node agent.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"glia.dev/glia/internal/agent"
)

func main() {
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
