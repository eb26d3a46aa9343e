package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/workspace"
)

// Shell completion ("microagent completion bash", say) asks the binary
// itself through cobra's hidden __complete command: these functions list
// what exists in the state directory --state-dir names. A state directory
// that cannot be read completes nothing, rather than failing the shell.

// completer lists candidates for the word being completed.
type completer func(g *globals, c *cobra.Command, args []string, toComplete string) []string

// complete adapts a completer to cobra: no file names are offered instead.
func complete(g *globals, f completer) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return directive(f(g, c, args, toComplete))
	}
}

// directive offers no file names, and no space after a "NAME:" that a
// snapshot tag is still to follow.
func directive(words []string) ([]string, cobra.ShellCompDirective) {
	d := cobra.ShellCompDirectiveNoFileComp
	for _, w := range words {
		if strings.HasSuffix(w, ":") {
			d |= cobra.ShellCompDirectiveNoSpace
		}
	}
	return words, d
}

// completeFirst completes the first argument with f and leaves the rest
// (a command and its arguments) to the shell's default completion.
func completeFirst(g *globals, f completer) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveDefault
		}
		return directive(f(g, c, args, toComplete))
	}
}

// completeNth completes argument i (counting from 0) with fs[i]; past the
// last, nothing.
func completeNth(g *globals, fs ...completer) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) >= len(fs) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return directive(fs[len(args)](g, c, args, toComplete))
	}
}

// completeWorkspaces lists the workspace names that start with toComplete.
func completeWorkspaces(g *globals, c *cobra.Command, _ []string, toComplete string) []string {
	h, err := g.home()
	if err != nil {
		return nil
	}
	infos, err := workspace.List(c.Context(), h)
	if err != nil {
		return nil
	}
	var out []string
	for _, i := range infos {
		if strings.HasPrefix(i.Name, toComplete) {
			out = append(out, i.Name)
		}
	}
	return out
}

// completeTags lists the snapshot tags of the workspace args[0] names.
func completeTags(g *globals, _ *cobra.Command, args []string, toComplete string) []string {
	if len(args) == 0 {
		return nil
	}
	return snapshotRefs(g, args[0], toComplete, false)
}

// completeSnapshotRefs lists WORKSPACE:TAG references: every workspace's
// snapshots once the word has a colon, else the workspaces that have
// snapshots, as "NAME:" to go on from.
func completeSnapshotRefs(g *globals, c *cobra.Command, _ []string, toComplete string) []string {
	if name, tag, ok := strings.Cut(toComplete, ":"); ok {
		return snapshotRefs(g, name, tag, true)
	}
	var out []string
	for _, n := range completeWorkspaces(g, c, nil, toComplete) {
		if len(snapshotRefs(g, n, "", false)) > 0 {
			out = append(out, n+":")
		}
	}
	return out
}

// snapshotRefs lists name's snapshot tags that start with prefix, as
// NAME:TAG when qualified.
func snapshotRefs(g *globals, name, prefix string, qualified bool) []string {
	h, err := g.home()
	if err != nil || workspace.ValidateName(name) != nil {
		return nil
	}
	snaps, err := workspace.ListSnapshots(h, name)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range snaps {
		if !strings.HasPrefix(s.Tag, prefix) {
			continue
		}
		if qualified {
			out = append(out, name+":"+s.Tag)
		} else {
			out = append(out, s.Tag)
		}
	}
	return out
}

// completeImages lists the stored image references that start with
// toComplete.
func completeImages(g *globals, _ *cobra.Command, _ []string, toComplete string) []string {
	s, err := g.store()
	if err != nil {
		return nil
	}
	imgs, err := s.List()
	if err != nil {
		return nil
	}
	var out []string
	for _, i := range imgs {
		if strings.HasPrefix(i.Ref, toComplete) {
			out = append(out, i.Ref)
		}
	}
	return out
}
