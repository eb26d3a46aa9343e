package cli

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/workspace"
)

// imageJSON is an image as --json prints it.
type imageJSON struct {
	Ref      string `json:"ref"`
	Digest   string `json:"digest"`
	Size     int64  `json:"size"`
	Platform string `json:"platform,omitempty"`
	Stored   string `json:"stored"`
}

func toImageJSON(imgs []*image.Image) []imageJSON {
	out := make([]imageJSON, 0, len(imgs))
	for _, i := range imgs {
		out = append(out, imageJSON{Ref: i.Ref, Digest: i.Digest.String(), Size: i.Size, Platform: i.Platform, Stored: i.Stored.UTC().Format("2006-01-02T15:04:05Z")})
	}
	return out
}

func (g *globals) store() (*image.Store, error) {
	h, err := g.home()
	if err != nil {
		return nil, err
	}
	return image.OpenStore(h)
}

// progress returns stderr when it is a terminal and output is for people.
func (g *globals) progress() *os.File {
	if f, ok := g.stderr.(*os.File); ok && !g.json && term.IsTerminal(int(f.Fd())) {
		return f
	}
	return nil
}

func newImageCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Pull, load, list and remove images"}
	var platform string
	pull := &cobra.Command{
		Use:   "pull IMAGE",
		Short: "Pull an image into the local store (through a configured mirror)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			o := image.PullOptions{Platform: platform}
			if p := g.progress(); p != nil {
				o.Progress = p
			}
			img, err := s.Pull(c.Context(), args[0], o)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(toImageJSON([]*image.Image{img})[0])
			}
			fmt.Fprintf(g.stdout, "%s %s\n", img.Ref, img.Digest)
			return nil
		},
	}
	pull.Flags().StringVar(&platform, "platform", "", "platform to pull (default linux/amd64)")
	load := &cobra.Command{
		Use:   "load FILE",
		Short: "Load images from a docker-save or OCI layout tarball",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			imgs, err := s.Load(c.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(toImageJSON(imgs))
			}
			for _, i := range imgs {
				fmt.Fprintf(g.stdout, "loaded %s %s\n", i.Ref, i.Digest)
			}
			return nil
		},
	}
	list := newImageListCmd(g, "list")
	list.Aliases = []string{"ls"}
	var force bool
	rm := &cobra.Command{
		Use:     "rm IMAGE...",
		Aliases: []string{"remove"},
		Short:   "Remove images from the store (their blobs go with \"image prune\")",
		Long: `Remove images from the store, all or none. An image a workspace or a snapshot
is pinned to (no other stored name points at its digest) is refused, naming
them: its next start would need a registry, and a loaded image would be gone.
--force removes it anyway ("image prune" still keeps its blobs while they are
pinned).`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: complete(g, completeImages),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			var pins []image.Pin
			if !force {
				if pins, err = g.imagePins(); err != nil {
					return err
				}
			}
			if err := s.RemovePinned(args, pins); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"removed": args})
			}
			for _, ref := range args {
				fmt.Fprintf(g.stdout, "removed %s\n", ref)
			}
			return nil
		},
	}
	rm.Flags().BoolVar(&force, "force", false, "remove images that workspaces or snapshots are pinned to")
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete blobs that no stored image uses",
		Long: `Delete the blobs that no stored image uses, and leftovers of interrupted pulls.
The blobs of an image a workspace or snapshot is pinned to are kept even when
no stored name points at it any more (its tag was pulled anew, or it was
removed with --force): they go once nothing is pinned to them.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			pins, err := g.imagePins()
			if err != nil {
				return err
			}
			freed, kept, err := s.PruneKeeping(pins)
			if err != nil {
				return err
			}
			if g.json {
				k := []map[string]any{}
				for _, p := range kept {
					k = append(k, map[string]any{"image": p.Ref, "pinnedBy": p.By})
				}
				return g.printJSON(map[string]any{"freedBytes": freed, "kept": k})
			}
			fmt.Fprintf(g.stdout, "freed %s\n", image.HumanSize(freed))
			for _, p := range kept {
				fmt.Fprintf(g.stdout, "kept %s: %s %s pinned to it\n", p.Ref, strings.Join(p.By, ", "), isAre(len(p.By)))
			}
			return nil
		},
	}
	c.AddCommand(pull, load, list, rm, prune)
	return c
}

// imagePins are the images workspaces and snapshots are pinned to.
func (g *globals) imagePins() ([]image.Pin, error) {
	h, err := g.home()
	if err != nil {
		return nil, err
	}
	return workspace.ImagePins(h)
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// newImagesCmd is "images", docker's name for "image list".
func newImagesCmd(g *globals) *cobra.Command {
	c := newImageListCmd(g, "images")
	c.Short = "List stored images (as \"image list\")"
	return c
}

// newImageListCmd builds "image list" under the name use.
func newImageListCmd(g *globals, use string) *cobra.Command {
	var of outputFormat
	c := &cobra.Command{
		Use:   use,
		Short: "List stored images",
		Long:  "List stored images.\n\n" + formatHelp("image references", imageJSON{}),
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := of.check(g); err != nil {
				return err
			}
			s, err := g.store()
			if err != nil {
				return err
			}
			imgs, err := s.List()
			if err != nil {
				return err
			}
			if done, err := printRows(g, &of, toImageJSON(imgs), func(i imageJSON) string { return i.Ref }); done {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tPLATFORM")
			for _, i := range imgs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", i.Ref, i.Digest.String()[:19], image.HumanSize(i.Size), i.Platform)
			}
			return tw.Flush()
		},
	}
	of.add(c, true)
	return c
}
