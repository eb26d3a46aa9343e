package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

func newSnapshotCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "Capture, list and delete workspace snapshots",
		Long: `A snapshot freezes a workspace's memory, devices and writable disk at one
moment. "microagent start NAME --from-snapshot TAG" rolls the workspace back to
it; "microagent create NEW --from-snapshot NAME:TAG" forks a new workspace
resumed from that moment (its own disk, hostname, machine id and entropy).

Secrets: before any memory is written the guest purges /run/secrets (every
file overwritten with zeros, synced, removed) and confirms; without the
confirmation nothing is written. The saved memory and disk are then searched
for every secret value delivered to this boot; a hit refuses the snapshot,
naming the secret. After the capture (and after resume, restore or fork) the
references are resolved again and the files put back. Values a workload
fetched on demand and keeps in its own memory are the workload's: they are
not purged, and they are saved with its memory.`,
	}
	var tag string
	create := &cobra.Command{
		Use:               "create NAME [--tag TAG]",
		Short:             "Capture a running or paused workspace (a running one is paused, captured and resumed)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			if err := workspace.ValidateName(args[0]); err != nil {
				return wsError(err)
			}
			if tag != "" {
				if err := workspace.ValidateTag(tag); err != nil {
					return snapError(err)
				}
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			s, err := workspace.CreateSnapshot(c.Context(), h, workspace.SnapshotOptions{Name: args[0], Tag: tag})
			if err != nil {
				return snapError(err)
			}
			if g.json {
				return g.printJSON(s)
			}
			fmt.Fprintf(g.stdout, "Snapshot %s:%s (%s)\n", s.Workspace, s.Tag, bytesHuman(s.SizeBytes))
			return nil
		},
	}
	create.Flags().StringVar(&tag, "tag", "", "snapshot name (default: the UTC time, YYYYMMDD-HHMMSS)")
	var of outputFormat
	list := &cobra.Command{
		Use:               "list NAME",
		Aliases:           []string{"ls"},
		Short:             "List a workspace's snapshots",
		Long:              "List a workspace's snapshots.\n\n" + formatHelp("tags", workspace.Snapshot{}),
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNth(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			if err := workspace.ValidateName(args[0]); err != nil {
				return wsError(err)
			}
			if err := of.check(g); err != nil {
				return err
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			snaps, err := workspace.ListSnapshots(h, args[0])
			if err != nil {
				return wsError(err)
			}
			if done, err := printRows(g, &of, snaps, func(s *workspace.Snapshot) string { return s.Tag }); done {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TAG\tSIZE\tCREATED\tIMAGE")
			for _, s := range snaps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Tag, bytesHuman(s.SizeBytes), s.Created.Local().Format(time.DateTime), s.Image.Ref)
			}
			return tw.Flush()
		},
	}
	del := &cobra.Command{
		Use:               "delete NAME TAG",
		Short:             "Delete a snapshot (forks made from it keep running)",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeNth(g, completeWorkspaces, completeTags),
		RunE: func(c *cobra.Command, args []string) error {
			if err := workspace.ValidateName(args[0]); err != nil {
				return wsError(err)
			}
			if err := workspace.ValidateTag(args[1]); err != nil {
				return snapError(err)
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			if err := workspace.DeleteSnapshot(h, args[0], args[1]); err != nil {
				return snapError(err)
			}
			if !g.json {
				fmt.Fprintf(g.stdout, "Deleted snapshot %s:%s\n", args[0], args[1])
			}
			return nil
		},
	}
	of.add(list, true)
	c.AddCommand(create, list, del)
	return c
}
