package nodeinit

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// ErrUsage marks a command line that could not be parsed; the message has
// been printed with the usage.
var ErrUsage = errors.New("usage")

// subcommands of `glia-agent init`, in the order the DaemonSet runs them.
var subcommands = []struct {
	name, summary string
	run           func(args []string, stderr io.Writer, log *slog.Logger) error
}{
	{"mount-bpffs", "mount a BPF file system at --path unless one is mounted there", runMountBPFFS},
	{"mount-cgroup2", "mount the cgroup v2 hierarchy at --path unless it is mounted there", runMountCgroup2},
	{"install-cni", "install the glia-cni plugin and " + ConfListName + " atomically", runInstallCNI},
}

// Run runs `glia-agent init SUBCOMMAND [flags]`; args start at SUBCOMMAND.
// What it did is logged to log; usage errors are printed to stderr and
// returned wrapped in ErrUsage.
func Run(args []string, stderr io.Writer, log *slog.Logger) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return fmt.Errorf("%w: glia-agent init needs a subcommand", ErrUsage)
		}
		return nil
	}
	for _, c := range subcommands {
		if c.name == args[0] {
			return c.run(args[1:], stderr, log.With("subsys", "init", "step", c.name))
		}
	}
	printUsage(stderr)
	return fmt.Errorf("%w: unknown subcommand %q of glia-agent init: use one of %s", ErrUsage, args[0], names())
}

func names() string {
	var n []string
	for _, c := range subcommands {
		n = append(n, c.name)
	}
	return strings.Join(n, ", ")
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: glia-agent init SUBCOMMAND [flags]   (prepares the node; run by the DaemonSet's init containers)")
	for _, c := range subcommands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
}

func parse(fs *pflag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return pflag.ErrHelp
		}
		return fmt.Errorf("%w: glia-agent init %s: %v", ErrUsage, fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: glia-agent init %s takes no arguments, got %q", ErrUsage, fs.Name(), fs.Args())
	}
	return nil
}

func runMount(name, what string, mount func(string) (bool, error)) func([]string, io.Writer, *slog.Logger) error {
	return func(args []string, stderr io.Writer, log *slog.Logger) error {
		fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
		path := fs.String("path", "", "where "+what+" must be mounted (required)")
		if err := parse(fs, args, stderr); err != nil {
			if errors.Is(err, pflag.ErrHelp) {
				return nil
			}
			return err
		}
		if *path == "" {
			return fmt.Errorf("%w: glia-agent init %s: --path is required", ErrUsage, name)
		}
		mounted, err := mount(*path)
		if err != nil {
			return err
		}
		if mounted {
			log.Info("Mounted "+what, "path", *path)
		} else {
			log.Info(what+" already mounted, nothing to do", "path", *path)
		}
		return nil
	}
}

var (
	runMountBPFFS   = runMount("mount-bpffs", "bpffs", MountBPFFS)
	runMountCgroup2 = runMount("mount-cgroup2", "cgroup2", MountCgroup2)
)

func runInstallCNI(args []string, stderr io.Writer, log *slog.Logger) error {
	var o InstallOptions
	fs := pflag.NewFlagSet("install-cni", pflag.ContinueOnError)
	fs.StringVar(&o.BinSrc, "bin-src", "/usr/bin/glia-cni", "the glia-cni binary to install")
	fs.StringVar(&o.BinDir, "bin-dir", "", "the node's CNI plugin directory, as mounted in the container (required)")
	fs.StringVar(&o.ConfDir, "conf-dir", "", "the node's CNI configuration directory, as mounted in the container (required)")
	fs.StringVar(&o.Socket, "socket", "/var/run/glia/glia.sock", "the agent's socket as the node sees it: the plugin's socketPath")
	if err := parse(fs, args, stderr); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := o.Validate(); err != nil {
		return fmt.Errorf("%w: glia-agent init install-cni: %w", ErrUsage, err)
	}
	res, err := InstallCNI(o)
	if err != nil {
		return err
	}
	log.Info("CNI plugin installed", "binary", res.Binary, "changed", res.BinaryChanged)
	log.Info("CNI network configuration installed", "file", res.ConfList, "changed", res.ConfListChanged, "socketPath", o.Socket)
	for _, f := range res.Shadowing {
		log.Warn("Another CNI configuration sorts before glia's: container runtimes that use the first one found will not use glia; remove it or rename it to sort after "+ConfListName, "file", f)
	}
	return nil
}
