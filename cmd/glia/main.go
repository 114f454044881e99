// Command glia is the CLI a person uses: status, health, config, lab, bench.
// It exits 0 on success, 1 when what was asked failed and 2 when the
// command line is wrong (cli.ExitCode).
package main

import (
	"errors"
	"fmt"
	"os"

	"glia.dev/glia/internal/cli"
)

func main() {
	err := cli.Run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		var u *cli.UsageError
		if errors.As(err, &u) {
			fmt.Fprintln(os.Stderr, u.Hint())
		}
	}
	os.Exit(cli.ExitCode(err))
}
