package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/workspace"
)

const cpLong = `Copy files and directories between the host and a running workspace, as
"docker cp" does. Exactly one of SRC and DST is WORKSPACE:PATH, and PATH is
absolute; the other is a host path, or "-" for a tar stream on stdin/stdout.

  SRC is a file:
    DST does not exist          the file is saved as DST (DST's parent must exist)
    DST ends with "/"           DST must be an existing directory
    DST is an existing file     it is overwritten
    DST is an existing dir      the file is copied into it under its own name
  SRC is a directory:
    DST does not exist          DST is created as a copy of the directory
    DST is an existing file     error
    DST is an existing dir      SRC is copied into it (DST/<name of SRC>);
                                SRC ending in "/." copies its contents instead
  SRC is "-"                    a tar stream is read from stdin and extracted
                                into the existing directory DST
  DST is "-"                    a tar archive of SRC is written to stdout

Modes, modification times, symlinks (copied as links, never followed) and
hard links are kept.

Into a workspace, setuid/setgid/sticky bits, FIFOs, device nodes and numeric
owners (uid/gid) are kept: the guest extracts as root, and what is in the
guest is the guest's business; --chown gives everything copied in an owner of
the image instead.

Out of a workspace, the guest is not trusted with the host (a workload may
control the guest's agent):
  - files are owned by the user running microagent; -a/--archive keeps the
    guest's numeric owners when microagent runs as root;
  - setuid, setgid and sticky bits are dropped, even with -a;
  - device nodes and FIFOs are skipped (reported as skipped), never created;
  - the archive must be about SRC's own name: an entry named otherwise (a
    guest answering "cp ws:/x.json ~/" with .bashrc) refuses the copy, and
    when it is the first entry nothing is written;
  - DST, and the parent of a DST to be created, must not be a symlink (an
    earlier copy may have left it there): the copy is refused, nothing is
    followed; give the directory it points to instead.
DST "-" writes the guest's archive as it came, for a tar program to judge.

Archive entries that would land outside DST (absolute names, "..", paths
through a symlink) are refused on both sides. Regular files are written under
a temporary name and renamed, so a failed copy never leaves a half-written
file, but the entries written before the failure stay. What is copied in
reaches the guest's disk like any write there: "halt" syncs it, "kill" right
after a copy may lose it.

The workspace must be running: a halted one is refused ("start it first"),
nothing is changed. A host path with a colon before its first "/" reads as
WORKSPACE:PATH; write it as ./name:with:colons.

Exit status: 0 copied, 1 failed (missing source, not running, refused), 2 bad
usage (no or two workspace sides, relative guest path).`

func newCpCmd(g *globals) *cobra.Command {
	var (
		chown   string
		parents bool
		archive bool
	)
	c := &cobra.Command{
		Use:   "cp [flags] SRC DST",
		Short: "Copy files between the host and a running workspace (WORKSPACE:/path on one side)",
		Long:  cpLong,
		Example: `  microagent cp ./src dev:/work/          # ./src becomes /work/src
  microagent cp dev:/work/out/. ./out     # the contents of /work/out into ./out
  tar -c -C dir . | microagent cp - dev:/work`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			srcWS, srcPath, srcRemote := splitRemote(args[0])
			dstWS, dstPath, dstRemote := splitRemote(args[1])
			switch {
			case srcRemote && dstRemote:
				return usageError("cp: both %q and %q name a workspace: copy between workspaces through the host", args[0], args[1])
			case !srcRemote && !dstRemote:
				return usageError("cp: neither %q nor %q names a workspace: write one side as WORKSPACE:/path", args[0], args[1])
			}
			ws, guestPath := srcWS, srcPath
			if dstRemote {
				ws, guestPath = dstWS, dstPath
			}
			if err := workspace.ValidateName(ws); err != nil {
				return wsError(err)
			}
			if !strings.HasPrefix(guestPath, "/") {
				return usageError("cp: guest path %q in workspace %s is not absolute (write %s:/%s)", guestPath, ws, ws, strings.TrimPrefix(guestPath, "./"))
			}
			if srcRemote && chown != "" {
				return usageError("cp: --chown applies to copies into a workspace")
			}
			if srcRemote && parents {
				return usageError("cp: --parents applies to copies into a workspace")
			}
			if archive && chown != "" {
				return usageError("cp: --archive keeps owners and --chown replaces them: give one")
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			ctx := c.Context()
			var st tarcopy.Stats
			switch {
			case dstRemote && args[0] == "-":
				st, err = workspace.CopyIn(ctx, h, workspace.CopyInOptions{Name: ws, Path: guestPath, Into: true, MkdirParents: parents, Owner: chown}, g.stdin)
			case dstRemote:
				st, err = workspace.CopyToGuest(ctx, h, workspace.CopyInOptions{Name: ws, Path: guestPath, MkdirParents: parents, Owner: chown}, args[0])
			case args[1] == "-":
				st, err = workspace.CopyOut(ctx, h, ws, guestPath, g.stdout)
			case archive:
				st, err = workspace.CopyFromGuestArchive(ctx, h, ws, guestPath, args[1])
			default:
				st, err = workspace.CopyFromGuest(ctx, h, ws, guestPath, args[1])
			}
			if err != nil {
				return cpError(err)
			}
			if args[1] == "-" {
				return nil // stdout is the archive
			}
			if g.json {
				return g.printJSON(st)
			}
			fmt.Fprintf(g.stdout, "Copied %s to %s\n", statsHuman(st), args[1])
			return nil
		},
	}
	c.Flags().StringVar(&chown, "chown", "", "owner in the guest of everything copied in: USER[:GROUP] of the image, names or numbers")
	c.Flags().BoolVar(&parents, "parents", false, "create the guest destination's missing parent directories")
	c.Flags().BoolVarP(&archive, "archive", "a", false, "out of a workspace, keep the guest's numeric owners (as root; never setuid bits or device nodes); copies in keep them anyway")
	return c
}

// splitRemote reads WORKSPACE:PATH; a colon after a "/" belongs to a host
// path.
func splitRemote(arg string) (ws, path string, remote bool) {
	i := strings.IndexByte(arg, ':')
	if i <= 0 || strings.Contains(arg[:i], "/") {
		return "", arg, false
	}
	return arg[:i], arg[i+1:], true
}

func cpError(err error) error {
	switch {
	case errors.Is(err, workspace.ErrCopyPath):
		return &ExitError{Code: ExitUsage, Err: err}
	}
	return wsError(err)
}

func statsHuman(st tarcopy.Stats) string {
	var parts []string
	plural := func(n int, what string) {
		if n == 0 {
			return
		}
		s := ""
		if n != 1 {
			s = "s"
		}
		parts = append(parts, fmt.Sprintf("%d %s%s", n, what, s))
	}
	plural(st.Files, "file")
	plural(st.Dirs, "directory")
	plural(st.Symlinks, "symlink")
	plural(st.Other, "special file")
	if len(parts) == 0 {
		parts = []string{"nothing"}
	}
	out := strings.Join(parts, ", ")
	out = strings.ReplaceAll(out, "directorys", "directories")
	size := fmt.Sprintf("%d bytes", st.Bytes)
	if st.Bytes >= 1<<10 {
		size = bytesHuman(st.Bytes)
	}
	out = fmt.Sprintf("%s (%s)", out, size)
	if st.Skipped > 0 {
		out += fmt.Sprintf("; skipped %d device node(s) or FIFO(s), which a copy out of a workspace never creates", st.Skipped)
	}
	return out
}

// fileFlags is --file HOST:GUEST[:MODE], for run and create.
type fileFlags struct{ specs []string }

func (f *fileFlags) add(c *cobra.Command, when, owner string) {
	c.Flags().StringArrayVar(&f.specs, "file", nil,
		"put a host file or directory into the guest "+when+": HOST:GUEST[:MODE] (GUEST absolute, parents created; "+
			"MODE octal, default the host file's; owned by "+owner+"; repeatable)")
}

// resolve parses and checks the specs: a malformed one or a missing host
// path is a usage error.
func (f *fileFlags) resolve() ([]tarcopy.FileSpec, error) {
	var out []tarcopy.FileSpec
	for _, s := range f.specs {
		fs, err := tarcopy.ParseFileSpec(s)
		if err != nil {
			return nil, usageError("--file: %v", err)
		}
		out = append(out, fs)
	}
	return out, nil
}
