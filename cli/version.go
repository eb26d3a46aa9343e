package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if g.json {
				return g.printJSON(map[string]string{"version": Version})
			}
			fmt.Fprintln(g.stdout, "microagent", Version)
			return nil
		},
	}
}

// Version is the release version, set at build time with -ldflags.
var Version = "dev"
