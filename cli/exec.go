package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
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
	)
	c := &cobra.Command{
		Use:   "exec NAME [flags] -- COMMAND [ARG...]",
		Short: "Run a command in a running workspace",
		Long: `Run a command in a running workspace, streaming its output, and exit with its
exit code. -i passes stdin; -t runs the command on a pseudo-terminal (with the
terminal's size, kept in step). Signals to this command (Ctrl-C, SIGTERM) are
forwarded to the command's process group; a third Ctrl-C gives up waiting.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			envs, err := parseEnv(env)
			if err != nil {
				return err
			}
			if timeout < 0 {
				return usageError("--timeout %s: must not be negative", timeout)
			}
			if err := guestDir("--cwd", cwd); err != nil {
				return err
			}
			if err := workspace.ValidateName(args[0]); err != nil {
				return wsError(err)
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			o := workspace.ExecOptions{
				Name: args[0], Argv: args[1:], Env: envs, Cwd: cwd, User: user, Timeout: timeout,
				Stdout: g.stdout, Stderr: g.stderr,
			}
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
			return exitStatus(g, es, args[1], timeout, nil)
		},
	}
	c.Flags().StringArrayVarP(&env, "env", "e", nil, "set an environment variable (NAME=VALUE, or NAME to pass the host's)")
	c.Flags().StringVarP(&cwd, "cwd", "w", "", "working directory in the guest (default: the image's)")
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
