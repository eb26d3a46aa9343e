package cli

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newHaltCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:     "halt NAME",
		Aliases: []string{"stop"},
		Short:   "Power a workspace off cleanly, keeping its disk",
		Long: `Power a workspace off: the guest stops its processes and syncs its disks,
then the VM quits. Past --timeout the VM is killed. The disk is kept; halting a
workspace that is not running changes nothing.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			if timeout < 0 {
				return usageError("--timeout %s: must not be negative", timeout)
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			inf, err := workspace.Halt(c.Context(), h, workspace.HaltOptions{Name: args[0], Timeout: timeout})
			if err != nil {
				return wsError(err)
			}
			return printStopped(g, inf, "Halted")
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", workspace.DefaultHaltTimeout, "how long the graceful power-off may take before the VM is killed")
	return c
}
