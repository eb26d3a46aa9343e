package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newWaitCmd(g *globals) *cobra.Command {
	var running bool
	c := &cobra.Command{
		Use:               "wait NAME",
		Short:             "Wait until a workspace stops (exit 0 if it halted, 1 if it failed)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			return waitResult(g, c.Context(), args[0], running)
		},
	}
	c.Flags().BoolVar(&running, "running", false, "wait until it runs instead (exit 1 if it stops)")
	return c
}

func waitResult(g *globals, ctx context.Context, name string, running bool) error {
	h, err := g.home()
	if err != nil {
		return err
	}
	inf, err := workspace.Wait(ctx, h, workspace.WaitOptions{Name: name, Running: running})
	if inf != nil {
		if g.json {
			if perr := g.printJSON(inf); perr != nil {
				return perr
			}
		} else if inf.Reason != "" {
			fmt.Fprintf(g.stdout, "%s: %s (%s)\n", inf.Name, inf.State, inf.Reason)
		} else {
			fmt.Fprintf(g.stdout, "%s: %s\n", inf.Name, inf.State)
		}
	}
	if err != nil {
		return wsError(err)
	}
	if inf.State == workspace.Failed {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("workspace %s failed: %s", inf.Name, inf.Reason)}
	}
	return nil
}
