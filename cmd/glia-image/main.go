// Command glia-image builds glia's OCI image without Docker (make image):
// glia's static binaries and the host's iptables/nftables userspace, written
// as an OCI image layout and a tarball for docker load / ctr images import.
// It is a program of its own so that go-containerregistry stays out of the
// binaries the image ships.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"glia.dev/glia/internal/image"
)

func main() {
	var o image.Options
	fs := pflag.NewFlagSet("glia-image", pflag.ContinueOnError)
	o.Flags(fs)
	list := fs.Bool("list", false, "list every file of the image")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if !fs.Changed("source-date-epoch") {
		t, err := image.EpochFromEnv(os.Getenv("SOURCE_DATE_EPOCH"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "glia-image:", err)
			os.Exit(2)
		}
		o.Created = t
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := image.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "glia-image:", err)
		os.Exit(1)
	}
	for _, l := range res.Layers {
		fmt.Printf("layer: %s: %d entries\n", l.Name, len(l.Entries))
		if *list {
			for _, e := range l.Entries {
				fmt.Printf("  %s\n", e)
			}
		}
	}
	fmt.Printf("image %s\n  digest %s\n  size %.1f MB (compressed)\n  oci layout %s\n  tarball %s\n",
		res.Tag, res.Digest, float64(res.Size)/1e6, o.LayoutDir, o.Tarball)
}
