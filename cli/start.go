package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newStartCmd(g *globals) *cobra.Command {
	var (
		wait         bool
		sec          secretFlags
		fromSnapshot string
	)
	c := &cobra.Command{
		Use:   "start NAME",
		Short: "Boot a workspace; it keeps running after this command exits",
		Long: `Boot a workspace and return once its guest is ready. The VM runs on under a
detached supervisor process until "microagent halt" or "kill". With --wait,
stay until the workspace stops and exit 0 if it halted, 1 if it failed.

Secrets: the workspace's secret references are resolved before the VM boots,
in this command's environment (env: references, VAULT_ADDR, VAULT_TOKEN ...).
A reference that cannot be resolved fails the start naming the secret and the
reason; the VM is not booted and the workspace stays in the state it was in.
Plaintext schemes are warned about on stderr. --secret, --secret-on-demand and
--secrets-env-file add declarations to the workspace: they are kept for every
later start once this start succeeds. A name (or env file) that is already
declared is refused and nothing is changed (exit 2); declarations cannot be
changed or removed, so to change one, delete the workspace and create it
again. --secrets-audit turns on the audit log (and starts a new, empty one if
the old log is missing, which otherwise refuses the start).

--from-snapshot TAG rolls the workspace back to one of its snapshots: memory,
devices and disk as they were (changes since are lost), then its secrets are
resolved again. Refused, with nothing changed, for a running workspace or a
snapshot this machine cannot resume (another kernel, memory size, CPU count or
accelerator).`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			decls, err := sec.declarations()
			if err != nil {
				return err
			}
			if err := workspace.ValidateName(args[0]); err != nil {
				return wsError(err)
			}
			if fromSnapshot != "" {
				if err := workspace.ValidateTag(fromSnapshot); err != nil {
					return snapError(err)
				}
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			inf, err := workspace.Start(c.Context(), h, workspace.StartOptions{
				Name: args[0], Progress: progressWriter(g),
				Secrets: decls, SecretsAudit: sec.audit, Warnings: g.stderr,
				FromSnapshot: fromSnapshot,
			})
			if err != nil {
				return snapError(err)
			}
			if !wait {
				if g.json {
					return g.printJSON(inf)
				}
				fmt.Fprintf(g.stdout, "Started %s in %.1fs\n", inf.Name, inf.BootSeconds)
				return nil
			}
			if !g.json {
				fmt.Fprintf(g.stdout, "Started %s in %.1fs; waiting for it to stop\n", inf.Name, inf.BootSeconds)
			}
			return waitResult(g, c.Context(), args[0], false)
		},
	}
	c.Flags().BoolVar(&wait, "wait", false, "after starting, wait until the workspace stops")
	c.Flags().StringVar(&fromSnapshot, "from-snapshot", "", "roll back to this snapshot of the workspace (memory, devices and disk)")
	c.RegisterFlagCompletionFunc("from-snapshot", complete(g, completeTags))
	sec.add(c, true)
	return c
}
