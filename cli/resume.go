package cli

import (
	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newResumeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resume NAME",
		Short: "Run a paused workspace again",
		Long: `Resume a paused workspace: the guest clock is set from the host, and secrets a
snapshot purged are resolved again and put back in /run/secrets.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			return pauseResume(g, c, args[0], workspace.Resume, "Resumed")
		},
	}
}
