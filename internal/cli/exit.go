package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes of glia, for scripts.
const (
	ExitOK      = 0 // what was asked was done (or --help)
	ExitFailure = 1 // what was asked failed
	ExitUsage   = 2 // the command line is wrong: unknown command, flag or format, a missing or extra argument
)

// UsageError is a command line glia cannot run: ExitCode gives it
// ExitUsage. Hint names the help to read.
type UsageError struct {
	Err error
	// Command is the command's path, e.g. "glia status".
	Command string
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Hint is the line printed after the error.
func (e *UsageError) Hint() string {
	cmd := e.Command
	if cmd == "" {
		cmd = "glia"
	}
	return fmt.Sprintf("Run '%s --help' for usage.", cmd)
}

// usageErrorf is a usage error of the running command (its path is added
// where the error leaves cobra).
func usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// ExitCode is the process exit code for Run's error.
func ExitCode(err error) int {
	var u *UsageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &u):
		return ExitUsage
	}
	return ExitFailure
}

// asUsage marks err as a usage error of cmd.
func asUsage(cmd *cobra.Command, err error) error {
	if err == nil {
		return nil
	}
	var u *UsageError
	if errors.As(err, &u) {
		if u.Command == "" {
			u.Command = cmd.CommandPath()
		}
		return err
	}
	return &UsageError{Err: err, Command: cmd.CommandPath()}
}

// markUsageErrors makes every way cobra rejects a command line a
// UsageError: flag errors, argument checks, unknown subcommands. A group
// command (one with subcommands and nothing to run) prints its help when
// called alone and refuses anything else.
func markUsageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return asUsage(c, err) })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if !c.Runnable() && c.HasSubCommands() {
			c.Args = unknownSubcommand
			c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
			return
		}
		if args := c.Args; args != nil {
			c.Args = func(c *cobra.Command, a []string) error { return asUsage(c, args(c, a)) }
		}
	}
	walk(root)
	// A failing PreRunE/RunE that returns a UsageError without a command
	// gets the command's path when it leaves (see Run).
}

// unknownSubcommand refuses any argument of a group command, naming the
// closest subcommands.
func unknownSubcommand(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return asUsage(c, errors.New(msg))
}
