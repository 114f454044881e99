// Command glia-agent is glia's per-node agent. It exits 0 when stopped (or
// for --help and --version), 1 when it failed, 2 when its command line is
// wrong.
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
	"k8s.io/klog/v2"

	"glia.dev/glia/internal/agent"
	"glia.dev/glia/internal/logging"
	"glia.dev/glia/internal/nodeinit"
	"glia.dev/glia/internal/version"
)

func main() {
	// `glia-agent init ...` prepares the node (the DaemonSet's init containers).
	if len(os.Args) > 1 && os.Args[1] == "init" {
		os.Exit(runInit(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var cfg agent.Config
	var logFormat string
	var showVersion bool
	fs := pflag.NewFlagSet("glia-agent", pflag.ContinueOnError)
	cfg.Flags(fs)
	fs.StringVar(&logFormat, "log-format", logging.FormatText, "log format: text (logfmt) or json (one JSON object a line, keys subsys, node, endpoint, service where they apply)")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "glia-agent: %v\nRun 'glia-agent --help' for usage.\n", err)
		return 2
	}
	if showVersion {
		fmt.Println("glia-agent", version.Get())
		return 0
	}
	// Info until the config is resolved; then the config key debug decides.
	cfg.LogLevel = new(slog.LevelVar)
	base, err := logging.New(os.Stderr, logFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "glia-agent:", err)
		return 2
	}
	log := base.With(logging.KeySubsys, "daemon", logging.KeyNode, cfg.NodeName)
	if err := cfg.Validate(); err != nil {
		log.Error("Invalid command line: see glia-agent --help", "error", err)
		return 2
	}
	// client-go logs through klog: into the same lines.
	klog.SetSlogLogger(log.With(logging.KeySubsys, "k8s-client"))
	v := version.Get()
	log.Info("Starting glia-agent", "version", v.Version, "commit", v.Commit, "logFormat", logFormat)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, log, cfg); err != nil {
		log.Error("glia-agent failed", "error", err)
		if logFormat == logging.FormatText {
			// The error as written, not quoted as a logfmt value: what a
			// person reads in kubectl logs (JSON lines keep it in "error").
			fmt.Fprintln(os.Stderr, "glia-agent:", err)
		}
		return 1
	}
	return 0
}

func runInit(args []string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := nodeinit.Run(args, os.Stderr, log); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "glia-agent init:", err)
		if errors.Is(err, nodeinit.ErrUsage) {
			return 2
		}
		return 1
	}
	return 0
}
