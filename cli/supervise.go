package cli

import (
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/workspace"
)

// newSuperviseCmd is the hidden command Start runs in the background as a
// workspace's supervisor; the readiness pipe is file descriptor 3.
func newSuperviseCmd(g *globals) *cobra.Command {
	var boot int
	c := &cobra.Command{
		Use:    workspace.SuperviseCommand + " NAME",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			var ready *os.File
			if _, err := unix.FcntlInt(3, unix.F_GETFD, 0); err == nil {
				ready = os.NewFile(3, "ready")
			}
			return workspace.Supervise(c.Context(), h, workspace.SuperviseOptions{Name: args[0], Boot: boot, Ready: ready, Log: g.stderr})
		},
	}
	c.Flags().IntVar(&boot, "boot", 0, "boot number")
	return c
}
