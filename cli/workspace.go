package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/workspace"
)

// newWorkspaceCmds returns the named-workspace commands.
func newWorkspaceCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newCreateCmd(g),
		newStartCmd(g),
		newExecCmd(g),
		newHaltCmd(g),
		newKillCmd(g),
		newDeleteCmd(g),
		newListCmd(g),
		newPsCmd(g),
		newStatusCmd(g),
		newLogsCmd(g),
		newPortForwardCmd(g),
		newEgressCmd(g),
		newWaitCmd(g),
		newGCCmd(g),
		newPauseCmd(g),
		newResumeCmd(g),
		newSnapshotCmd(g),
		newSuperviseCmd(g),
	}
}

// wsError maps the workspace package's errors to the exit codes: an invalid
// name is a usage error (2), a busy workspace retryable (75), the rest
// failures (1).
func wsError(err error) error {
	if err == nil {
		return nil
	}
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		return err
	case errors.Is(err, workspace.ErrInvalidName), errors.Is(err, workspace.ErrSecretDecl), errors.Is(err, workspace.ErrNetwork), errors.Is(err, tarcopy.ErrFileSpec):
		return &ExitError{Code: ExitUsage, Err: err}
	case errors.Is(err, workspace.ErrBusy):
		return &ExitError{Code: ExitRetryable, Err: err}
	case errors.Is(err, context.Canceled):
		return &ExitError{Code: ExitInterrupted, Err: errors.New("interrupted")}
	}
	return &ExitError{Code: ExitFailure, Err: err}
}

// snapError maps snapshot errors to exit codes: a bad tag or reference is
// a usage error (2); the rest go through wsError.
func snapError(err error) error {
	if errors.Is(err, workspace.ErrInvalidTag) {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	return wsError(err)
}

func progressWriter(g *globals) io.Writer {
	if f := g.progress(); f != nil {
		return f
	}
	return nil
}

// printStopped reports a halt or kill; a workspace that ended failed (its
// supervisor died during the halt, say) makes the command fail.
func printStopped(g *globals, inf *workspace.Info, verb string) error {
	if g.json {
		if err := g.printJSON(inf); err != nil {
			return err
		}
	} else if inf.State == workspace.Halted && inf.Reason != "" {
		fmt.Fprintf(g.stdout, "%s %s (%s)\n", verb, inf.Name, inf.Reason)
	} else if inf.State == workspace.Halted || inf.State == workspace.Created {
		fmt.Fprintf(g.stdout, "%s %s\n", verb, inf.Name)
	}
	if inf.State == workspace.Failed {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("workspace %s is stopped but failed: %s", inf.Name, inf.Reason)}
	}
	return nil
}

func resources(r workspace.Resources) string {
	cpu := "CPUs"
	if r.CPUs == 1 {
		cpu = "CPU"
	}
	return fmt.Sprintf("%d MiB, %d %s, %s disk", r.MemoryMiB, r.CPUs, cpu, bytesHuman(r.DiskBytes))
}

func bytesHuman(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}
