package cli

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newDeleteCmd(g *globals) *cobra.Command {
	var yes, force bool
	c := &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete workspaces and their disks",
		Long: `Delete workspaces and their disks. On a terminal it asks first; elsewhere it
needs --yes. A live workspace is refused unless -f/--force, which kills it
first, asks nothing, and (as "docker rm -f") passes over a name no workspace
has: deleting with --force twice exits 0 both times.`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: complete(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			for _, n := range args {
				if err := workspace.ValidateName(n); err != nil {
					return wsError(err)
				}
			}
			if !yes && !force {
				if !isTerminal(g.stdin) {
					return usageError("delete asks for confirmation, and stdin is not a terminal: pass --yes")
				}
				fmt.Fprintf(g.stderr, "Delete %s and %s disk%s? [y/N] ", strings.Join(args, ", "), map[bool]string{true: "their", false: "its"}[len(args) > 1], map[bool]string{true: "s", false: ""}[len(args) > 1])
				line, _ := bufio.NewReader(g.stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					return &ExitError{Code: ExitFailure, Err: errors.New("not deleted")}
				}
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			deleted := []string{}
			var errs []error
			for _, n := range args {
				err := workspace.Delete(c.Context(), h, workspace.DeleteOptions{Name: n, Force: force})
				if force && errors.Is(err, workspace.ErrNotFound) {
					continue
				}
				if err != nil {
					errs = append(errs, wsError(err))
					continue
				}
				deleted = append(deleted, n)
				if !g.json {
					fmt.Fprintf(g.stdout, "Deleted %s\n", n)
				}
			}
			if g.json {
				if err := g.printJSON(map[string]any{"deleted": deleted}); err != nil {
					return err
				}
			}
			return joinExitErrors(errs)
		},
	}
	c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	c.Flags().BoolVarP(&force, "force", "f", false, "kill live workspaces first, do not ask, and pass over names no workspace has")
	return c
}

// joinExitErrors combines per-workspace errors; the exit code is theirs
// when they agree, else 1.
func joinExitErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == 1 {
		return errs[0]
	}
	code := exitCode(errs[0])
	for _, e := range errs[1:] {
		if exitCode(e) != code {
			code = ExitFailure
		}
	}
	return &ExitError{Code: code, Err: errors.Join(errs...)}
}
