package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/hostcheck"
)

func newDoctorCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run microVMs, and say how to fix what is missing",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			checks := hostcheck.Checks(c.Context(), hostcheck.Options{Home: h})
			fatal := hostcheck.Fatal(checks)
			if g.json {
				if err := g.printJSON(map[string]any{"ok": !fatal, "checks": checks}); err != nil {
					return err
				}
			} else {
				for _, ch := range checks {
					mark := "ok  "
					if !ch.OK {
						mark = "FAIL"
						if !ch.Fatal {
							mark = "warn"
						}
					}
					fmt.Fprintf(g.stdout, "%s %-16s %s\n", mark, ch.Name, ch.Detail)
					if !ch.OK && ch.Fix != "" {
						fmt.Fprintf(g.stdout, "     %-16s fix: %s\n", "", ch.Fix)
					}
				}
			}
			if fatal {
				return &ExitError{Code: ExitFailure, Err: errors.New("this host cannot run microVMs yet: see the fixes above")}
			}
			return nil
		},
	}
}
