package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List all workspaces",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			infos, err := workspace.List(c.Context(), h)
			if err != nil {
				return wsError(err)
			}
			return printInfos(g, infos, false)
		},
	}
}

func newPsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ps",
		Short: "List the running workspaces",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			infos, err := workspace.ListRunning(c.Context(), h)
			if err != nil {
				return wsError(err)
			}
			return printInfos(g, infos, true)
		},
	}
}

func printInfos(g *globals, infos []*workspace.Info, live bool) error {
	if g.json {
		if infos == nil {
			infos = []*workspace.Info{}
		}
		return g.printJSON(infos)
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
