package cli

import (
	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newKillCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "kill NAME",
		Short:             "Stop a workspace's VM at once (no sync), keeping its disk",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			inf, err := workspace.Kill(c.Context(), h, args[0])
			if err != nil {
				return wsError(err)
			}
			return printStopped(g, inf, "Killed")
		},
	}
}
