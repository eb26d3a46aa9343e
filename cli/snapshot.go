package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/workspace"
)

// snapError maps snapshot errors to exit codes: a bad tag or reference is
// a usage error (2); the rest go through wsError.
func snapError(err error) error {
	if errors.Is(err, workspace.ErrInvalidTag) {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	return wsError(err)
}

func newPauseCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "pause NAME",
		Short: "Stop a running workspace's virtual CPUs; its memory stays as it is",
		Long: `Pause a running workspace: its virtual CPUs stop, its memory and processes stay
as they are (nothing is written, so secrets are not purged). "microagent
resume NAME" runs it again, setting the guest clock. exec is refused while
paused; halt resumes it first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return pauseResume(g, c, args[0], workspace.Pause, "Paused")
		},
	}
}

func newResumeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resume NAME",
		Short: "Run a paused workspace again",
		Long: `Resume a paused workspace: the guest clock is set from the host, and secrets a
snapshot purged are resolved again and put back in /run/secrets.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return pauseResume(g, c, args[0], workspace.Resume, "Resumed")
		},
	}
}

func pauseResume(g *globals, c *cobra.Command, name string, op func(context.Context, home.Home, string) (*workspace.Info, error), verb string) error {
	if err := workspace.ValidateName(name); err != nil {
		return wsError(err)
	}
	h, err := g.home()
	if err != nil {
		return err
	}
	inf, err := op(c.Context(), h, name)
	if err != nil {
		return wsError(err)
	}
	if g.json {
		return g.printJSON(inf)
	}
	fmt.Fprintf(g.stdout, "%s %s\n", verb, name)
	return nil
}

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
		Use:   "create NAME [--tag TAG]",
		Short: "Capture a running or paused workspace (a running one is paused, captured and resumed)",
		Args:  cobra.ExactArgs(1),
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
	list := &cobra.Command{
		Use:     "list NAME",
		Aliases: []string{"ls"},
		Short:   "List a workspace's snapshots",
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := workspace.ValidateName(args[0]); err != nil {
				return wsError(err)
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			snaps, err := workspace.ListSnapshots(h, args[0])
			if err != nil {
				return wsError(err)
			}
			if g.json {
				if snaps == nil {
					snaps = []*workspace.Snapshot{}
				}
				return g.printJSON(snaps)
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
		Use:   "delete NAME TAG",
		Short: "Delete a snapshot (forks made from it keep running)",
		Args:  cobra.ExactArgs(2),
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
	c.AddCommand(create, list, del)
	return c
}

// createFork is "create NAME --from-snapshot WS:TAG": Fork, then Start; a
// fork whose first start fails is deleted, so the command either leaves a
// running fork or nothing.
func createFork(g *globals, c *cobra.Command, name, ref string) error {
	for _, f := range []string{"image", "pull", "kernel", "profile", "memory", "cpus", "disk-size", "secret", "secret-on-demand", "secrets-env-file", "secrets-audit", "network", "publish", "host-access", "dns", "file"} {
		if fl := c.Flags().Lookup(f); fl != nil && fl.Changed {
			return usageError("--%s cannot be combined with --from-snapshot: a fork takes the source's image, resources, secret declarations and network (without its published ports)", f)
		}
	}
	if err := workspace.ValidateName(name); err != nil {
		return wsError(err)
	}
	src, tag, err := workspace.ParseSnapshotRef(ref)
	if err != nil {
		return snapError(err)
	}
	h, err := g.home()
	if err != nil {
		return err
	}
	if _, err := workspace.Fork(c.Context(), h, workspace.ForkOptions{Name: name, Source: src, Tag: tag}); err != nil {
		return snapError(err)
	}
	inf, err := workspace.Start(c.Context(), h, workspace.StartOptions{Name: name, Progress: progressWriter(g), Warnings: g.stderr})
	if err != nil {
		if derr := workspace.Delete(context.WithoutCancel(c.Context()), h, workspace.DeleteOptions{Name: name, Force: true}); derr != nil {
			err = fmt.Errorf("%w (and the fork could not be deleted: %v)", err, derr)
		}
		return snapError(err)
	}
	if g.json {
		return g.printJSON(inf)
	}
	fmt.Fprintf(g.stdout, "Forked %s from %s:%s, running (resumed in %.1fs)\n", name, src, tag, inf.BootSeconds)
	return nil
}
