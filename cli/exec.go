package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/microagent-dev/microagent/workspace"
)

func newExecCmd(g *globals) *cobra.Command {
	var (
		env         []string
		cwd, user   string
		interactive bool
		tty         bool
		timeout     time.Duration
		out         jsonOutput
	)
	c := &cobra.Command{
		Use:   "exec [flags] NAME COMMAND [ARG...]",
		Short: "Run a command in a running workspace",
		Long: `Run a command in a running workspace, streaming its output, and exit with its
exit code. -i passes stdin; -t runs the command on a pseudo-terminal (with the
terminal's size, kept in step). Signals to this command (Ctrl-C, SIGTERM) are
forwarded to the command's process group; a third Ctrl-C gives up waiting.

Flags go before or right after NAME; the first argument after NAME that is
not a flag starts the command, so "exec NAME ls -la" runs "ls -la" ("--"
ends the flags too). -t is refused with --json.

` + resultHelp("totalSeconds") + exitCodeTable,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: completeFirst(g, completeWorkspaces),
		RunE: func(c *cobra.Command, args []string) error {
			name := args[0]
			// Flags between NAME and the command: parsing stops again at
			// the first argument that is not one.
			if err := c.Flags().Parse(args[1:]); err != nil {
				if errors.Is(err, pflag.ErrHelp) {
					return c.Help()
				}
				return c.FlagErrorFunc()(c, err)
			}
			argv := c.Flags().Args()
			if len(argv) == 0 {
				return usageError("exec %s: give the command to run after the workspace name, e.g. \"exec %s ls -la\"", name, name)
			}
			if err := out.begin(g, c); err != nil {
				return err
			}
			if tty && g.json {
				return usageError("-t streams to a terminal and --json captures the output: use one of them")
			}
			envs, err := parseEnv(env)
			if err != nil {
				return err
			}
			if timeout < 0 {
				return usageError("--timeout %s: must not be negative", timeout)
			}
			dirFlag := "--workdir"
			if c.Flags().Changed("cwd") {
				dirFlag = "--cwd"
			}
			if err := guestDir(dirFlag, cwd); err != nil {
				return err
			}
			if err := workspace.ValidateName(name); err != nil {
				return wsError(err)
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			o := workspace.ExecOptions{Name: name, Argv: argv, Env: envs, Cwd: cwd, User: user, Timeout: timeout}
			o.Stdout, o.Stderr = out.streams(g)
			if interactive {
				o.Stdin = g.stdin
			}
			// Signals are forwarded, not obeyed: the command decides.
			ctx, cancel := context.WithCancel(context.WithoutCancel(c.Context()))
			defer cancel()
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
			defer signal.Stop(sigs)
			fwd := make(chan syscall.Signal, 8)
			resizes := make(chan workspace.WindowSize, 4)
			o.Signals, o.Resizes = fwd, resizes
			if tty {
				o.TTY = true
				if ws, ok := termSize(g.stdout); ok {
					o.Rows, o.Cols = ws.Rows, ws.Cols
				}
				if f, ok := g.stdin.(*os.File); ok && interactive && term.IsTerminal(int(f.Fd())) {
					st, err := term.MakeRaw(int(f.Fd()))
					if err != nil {
						return fmt.Errorf("exec: set the terminal to raw mode: %w", err)
					}
					defer term.Restore(int(f.Fd()), st)
				}
			}
			go func() {
				ints := 0
				for s := range sigs {
					sig := s.(syscall.Signal)
					if sig == syscall.SIGWINCH {
						if ws, ok := termSize(g.stdout); ok && tty {
							select {
							case resizes <- ws:
							default:
							}
						}
						continue
					}
					if sig == syscall.SIGINT {
						if ints++; ints >= 3 {
							cancel()
						}
					}
					select {
					case fwd <- sig:
					default:
					}
				}
			}()
			es, err := workspace.Exec(ctx, h, o)
			if err != nil {
				return wsError(err)
			}
			return exitStatus(g, &out, es, argv[0], timeout, 0)
		},
	}
	ownFailures(c)
	c.Flags().SetInterspersed(false)
	out.addOutputLimit(c)
	c.Flags().StringArrayVarP(&env, "env", "e", nil, "set an environment variable (NAME=VALUE, or NAME to pass the host's)")
	c.Flags().StringVarP(&cwd, "workdir", "w", "", "working directory in the guest (default: the image's)")
	c.Flags().StringVar(&cwd, "cwd", "", "the old name of --workdir")
	c.Flags().MarkHidden("cwd")
	c.Flags().StringVarP(&user, "user", "u", "", "user in the guest (default: the image's)")
	c.Flags().BoolVarP(&interactive, "interactive", "i", false, "pass stdin to the command")
	c.Flags().BoolVarP(&tty, "tty", "t", false, "run the command on a pseudo-terminal")
	c.Flags().DurationVar(&timeout, "timeout", 0, "kill the command after this long (e.g. 30s; exit code 124)")
	return c
}

func termSize(w io.Writer) (workspace.WindowSize, bool) {
	f, ok := w.(*os.File)
	if !ok {
		return workspace.WindowSize{}, false
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row == 0 || ws.Col == 0 {
		return workspace.WindowSize{}, false
	}
	return workspace.WindowSize{Rows: ws.Row, Cols: ws.Col}, true
}
