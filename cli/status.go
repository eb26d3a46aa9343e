package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newStatusCmd(g *globals) *cobra.Command {
	var of outputFormat
	c := &cobra.Command{
		Use:               "status NAME",
		Aliases:           []string{"inspect"},
		Short:             "Show a workspace's state, as observed now",
		Long:              "Show a workspace's state, as observed now: its processes are checked.\n\n" + formatHelp("", workspace.Info{}),
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			if err := of.check(g); err != nil {
				return err
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			i, err := workspace.Status(c.Context(), h, args[0])
			if err != nil {
				return wsError(err)
			}
			if done, err := printOne(g, &of, i); done {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 1, ' ', 0)
			fmt.Fprintf(tw, "name:\t%s\n", i.Name)
			fmt.Fprintf(tw, "state:\t%s\n", i.State)
			if i.Reason != "" {
				fmt.Fprintf(tw, "reason:\t%s\n", i.Reason)
			}
			fmt.Fprintf(tw, "image:\t%s (%s)\n", i.Image, i.Digest)
			fmt.Fprintf(tw, "resources:\t%s (%s used)\n", resources(i.Resources), bytesHuman(i.DiskUsedBytes))
			fmt.Fprintf(tw, "created:\t%s\n", i.Created.Local().Format(time.RFC3339))
			if !i.Started.IsZero() {
				fmt.Fprintf(tw, "started:\t%s\n", i.Started.Local().Format(time.RFC3339))
			}
			if !i.Stopped.IsZero() && !i.State.Live() {
				fmt.Fprintf(tw, "stopped:\t%s\n", i.Stopped.Local().Format(time.RFC3339))
			}
			if i.BootSeconds > 0 {
				fmt.Fprintf(tw, "boot:\t%.2fs\n", i.BootSeconds)
			}
			if i.SupervisorPID > 0 {
				fmt.Fprintf(tw, "supervisor:\tpid %d\n", i.SupervisorPID)
			}
			if i.VMMPID > 0 {
				fmt.Fprintf(tw, "vmm:\tpid %d\n", i.VMMPID)
			}
			if i.State == workspace.Running {
				fmt.Fprintf(tw, "execs:\t%d\n", i.Execs)
			}
			if i.Forwards > 0 {
				fmt.Fprintf(tw, "port-forwards:\t%d\n", i.Forwards)
			}
			if i.Secrets != nil {
				fmt.Fprintf(tw, "secrets:\t%s\n", secretsSummary(i.Secrets))
			}
			if i.Network != nil {
				fmt.Fprintf(tw, "network:\t%s\n", networkSummary(i.Network))
			}
			fmt.Fprintf(tw, "dir:\t%s\n", i.Dir)
			return tw.Flush()
		},
	}
	of.add(c, false)
	return c
}

// secretsSummary lists a workspace's secret declarations (references, which
// are safe to print) on one line.
func secretsSummary(sc *workspace.SecretsConfig) string {
	var parts []string
	for _, d := range sc.Secrets {
		parts = append(parts, d.String())
	}
	for _, p := range sc.EnvFiles {
		parts = append(parts, "env file "+p)
	}
	if sc.Audit {
		parts = append(parts, "audit on")
	}
	return strings.Join(parts, ", ")
}
