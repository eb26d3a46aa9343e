// Package cli is microagent's command-line shell: flag parsing and printing
// over the library packages, nothing more.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/home"
)

// Exit codes shared by every command.
const (
	ExitOK        = 0
	ExitFailure   = 1
	ExitUsage     = 2
	ExitRetryable = 75 // EX_TEMPFAIL: try again later
)

// ExitError carries a process exit code out of a command. A nil Err means
// the code is the whole message (run passes a guest exit code through).
type ExitError struct {
	Code int
	Err  error
	// guest marks a code that is the guest command's end (its exit code, a
	// timeout, a command that could not run), not microagent's failure.
	guest bool
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit code %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

func usageError(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// globals are the flags every command shares.
type globals struct {
	stateDir string
	json     bool
	stdout   io.Writer
	stderr   io.Writer
	stdin    io.Reader
}

func (g *globals) home() (home.Home, error) { return home.Resolve(g.stateDir) }

// printJSON writes v as indented JSON on stdout.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// NewRoot builds the command tree.
func NewRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr, stdin: stdin}
	var version bool
	root := &cobra.Command{
		Use:           "microagent",
		Short:         "Run AI-agent workspaces in Linux microVMs booted from OCI images",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(c *cobra.Command, _ []string) error {
			if version {
				return printVersion(c.Context(), g)
			}
			return c.Help()
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", "", "state directory (default $MICROAGENT_HOME or $XDG_DATA_HOME/microagent)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print machine-readable JSON")
	root.Flags().BoolVar(&version, "version", false, "print the version, as the version command does")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(
		newRunCmd(g),
		newKernelCmd(g),
		newImageCmd(g),
		newImagesCmd(g),
		newDoctorCmd(g),
		newVersionCmd(g),
		newSecretCmd(g),
		newCpCmd(g),
		newServeCmd(g),
		newNodeCmd(g),
	)
	root.AddCommand(newWorkspaceCmds(g)...)
	return root
}

// Main runs the CLI on the process's standard streams, stopping on SIGINT
// or SIGTERM, and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, os.Stdin, os.Stdout, os.Stderr)
}

// Run runs the CLI with the given arguments and streams and returns the
// exit code; errors are printed on stderr (as JSON with --json).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	var ee *ExitError
	if errors.As(err, &ee) && ee.Err == nil {
		return code // the guest's own exit code: nothing to add
	}
	if jsonRequested(args) {
		json.NewEncoder(stderr).Encode(map[string]any{"error": err.Error(), "exitCode": code})
	} else {
		fmt.Fprintf(stderr, "microagent: %v\n", err)
	}
	return code
}

func jsonRequested(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--json" || a == "--json=true" {
			return true
		}
	}
	return false
}

// exitCode maps an error to the conventions: usage 2, retryable 75, else 1.
func exitCode(err error) int {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if isUnknownCommandOrArgs(err) {
		return ExitUsage
	}
	if isRetryable(err) {
		return ExitRetryable
	}
	return ExitFailure
}

func isUnknownCommandOrArgs(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "requires at most", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// isRetryable reports errors that may go away by themselves: a registry that
// is down or slow.
func isRetryable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}
