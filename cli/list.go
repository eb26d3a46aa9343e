package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newListCmd(g *globals) *cobra.Command {
	var of outputFormat
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List all workspaces",
		Long:    "List all workspaces, in every state.\n\n" + formatHelp("workspace names", workspace.Info{}),
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if err := of.check(g); err != nil {
				return err
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			infos, err := workspace.List(c.Context(), h)
			if err != nil {
				return wsError(err)
			}
			return printInfos(g, &of, infos, false)
		},
	}
	of.add(c, true)
	return c
}

func newPsCmd(g *globals) *cobra.Command {
	var of outputFormat
	c := &cobra.Command{
		Use:   "ps",
		Short: "List the running workspaces",
		Long:  "List the live workspaces (starting, running, paused, halting).\n\n" + formatHelp("workspace names", workspace.Info{}),
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if err := of.check(g); err != nil {
				return err
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			infos, err := workspace.ListRunning(c.Context(), h)
			if err != nil {
				return wsError(err)
			}
			return printInfos(g, &of, infos, true)
		},
	}
	of.add(c, true)
	return c
}

func printInfos(g *globals, of *outputFormat, infos []*workspace.Info, live bool) error {
	if done, err := printRows(g, of, infos, func(i *workspace.Info) string { return i.Name }); done {
		return err
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	if live {
		fmt.Fprintln(tw, "NAME\tSTATE\tPID\tUPTIME\tCPUS\tMEMORY\tIMAGE")
		for _, i := range infos {
			up := "-"
			if !i.Started.IsZero() {
				up = time.Since(i.Started).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d MiB\t%s\n", i.Name, i.State, i.SupervisorPID, up, i.Resources.CPUs, i.Resources.MemoryMiB, i.Image)
		}
	} else {
		fmt.Fprintln(tw, "NAME\tSTATE\tCPUS\tMEMORY\tDISK\tIMAGE\tCREATED")
		for _, i := range infos {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d MiB\t%s\t%s\t%s\n", i.Name, i.State, i.Resources.CPUs, i.Resources.MemoryMiB,
				bytesHuman(i.Resources.DiskBytes), i.Image, i.Created.Local().Format("2006-01-02 15:04"))
		}
	}
	return tw.Flush()
}
