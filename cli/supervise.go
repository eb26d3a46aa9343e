package cli

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/supervisor"
)

// newSuperviseCmd is the hidden command Start runs in the background as a
// workspace's supervisor: package supervisor parses its own command line.
func newSuperviseCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: supervisor.CommandName, Hidden: true, DisableFlagParsing: true,
		RunE: func(c *cobra.Command, _ []string) error { return supervisor.Main(c.Context(), os.Args, g.stderr) }}
}
