package cli

import "github.com/spf13/cobra"

// newWorkspaceCmds returns the named-workspace commands.
func newWorkspaceCmds(g *globals) []*cobra.Command { return nil }
