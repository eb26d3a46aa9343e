package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/workspace"
)

func newPauseCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "pause NAME",
		Short: "Stop a running workspace's virtual CPUs; its memory stays as it is",
		Long: `Pause a running workspace: its virtual CPUs stop, its memory and processes stay
as they are (nothing is written, so secrets are not purged). "microagent
resume NAME" runs it again, setting the guest clock. exec is refused while
paused; halt resumes it first.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			return pauseResume(g, c, args[0], workspace.Pause, "Paused")
		},
	}
}

func pauseResume(g *globals, c *cobra.Command, name string, op func(context.Context, home.Home, string) (*workspace.Info, error), verb string) error {
	if err := workspace.ValidateName(name); err != nil {
		return wsError(err)
	}
	h, err := g.home()
	if err != nil {
		return err
	}
	inf, err := op(c.Context(), h, name)
	if err != nil {
		return wsError(err)
	}
	if g.json {
		return g.printJSON(inf)
	}
	fmt.Fprintf(g.stdout, "%s %s\n", verb, name)
	return nil
}
