package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newGCCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Repair workspace state after crashes: leftovers, orphan processes, stale sockets",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			rep, err := workspace.GC(c.Context(), h)
			if err != nil {
				return wsError(err)
			}
			if g.json {
				return g.printJSON(rep)
			}
			for _, n := range rep.Removed {
				fmt.Fprintf(g.stdout, "removed leftover %s\n", n)
			}
			for _, n := range rep.Repaired {
				fmt.Fprintf(g.stdout, "repaired %s\n", n)
			}
			for _, p := range rep.Killed {
				fmt.Fprintf(g.stdout, "stopped orphan process %d\n", p)
			}
			for _, n := range rep.Skipped {
				fmt.Fprintf(g.stdout, "skipped %s (busy)\n", n)
			}
			if len(rep.Removed)+len(rep.Repaired)+len(rep.Killed)+len(rep.Skipped) == 0 {
				fmt.Fprintln(g.stdout, "nothing to repair")
			}
			return nil
		},
	}
}
