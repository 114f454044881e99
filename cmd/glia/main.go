// Command glia is the CLI a person uses: status, health, config, lab, bench.
package main

import (
	"fmt"
	"os"

	"glia.dev/glia/internal/cli"
)

func main() {
	if err := cli.Run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
