package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/workspace"
)

// newWorkspaceCmds returns the named-workspace commands.
func newWorkspaceCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newCreateCmd(g),
		newStartCmd(g),
		newExecCmd(g),
		newHaltCmd(g),
		newKillCmd(g),
		newDeleteCmd(g),
		newListCmd(g),
		newPsCmd(g),
		newStatusCmd(g),
		newLogsCmd(g),
		newWaitCmd(g),
		newGCCmd(g),
		newPauseCmd(g),
		newResumeCmd(g),
		newSnapshotCmd(g),
		newSuperviseCmd(g),
	}
}

// wsError maps the workspace package's errors to the exit codes: an invalid
// name is a usage error (2), a busy workspace retryable (75), the rest
// failures (1).
func wsError(err error) error {
	if err == nil {
		return nil
	}
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		return err
	case errors.Is(err, workspace.ErrInvalidName), errors.Is(err, workspace.ErrSecretDecl), errors.Is(err, workspace.ErrNetwork), errors.Is(err, tarcopy.ErrFileSpec):
		return &ExitError{Code: ExitUsage, Err: err}
	case errors.Is(err, workspace.ErrBusy):
		return &ExitError{Code: ExitRetryable, Err: err}
	case errors.Is(err, context.Canceled):
		return &ExitError{Code: 130, Err: errors.New("interrupted")}
	}
	return &ExitError{Code: ExitFailure, Err: err}
}

func progressWriter(g *globals) io.Writer {
	if f := g.progress(); f != nil {
		return f
	}
	return nil
}

func newCreateCmd(g *globals) *cobra.Command {
	var (
		res        resourceFlags
		name, ref  string
		pull       string
		kernelPath string
		sec        secretFlags
		fromSnap   string
		netf       networkFlags
		files      fileFlags
	)
	c := &cobra.Command{
		Use:   "create NAME --image REF | create NAME --from-snapshot WS:TAG",
		Short: "Create a named workspace: a persistent microVM whose disk survives between boots",
		Long: `Create a named workspace from an OCI image. The image is pulled (per --pull)
and the workspace pinned to its digest; its writable disk is created empty at
--disk-size (or the profile's size). "microagent start NAME" boots it.

Secrets: --secret, --secret-on-demand and --secrets-env-file declare secrets
(NAME=<scheme>:<ref>); the manifest keeps the references, never the values,
and every start resolves them afresh (failing closed, before the VM boots).
Materialized secrets appear as 0400 files in a tmpfs at /run/secrets;
on-demand ones are fetched over $MICROAGENT_SECRETS_SOCK. --secrets-audit
records every access in the workspace's append-only audit log ("microagent
secret audit NAME"). A malformed declaration creates nothing (exit 2).

Network: --network, -p/--publish, --host-access and --dns work as for "run"
and are kept for every start: published ports are bound again at each start,
and a port taken on the host then fails that start before the VM boots. A
spec that can never work creates nothing (exit 2).

--from-snapshot WS:TAG forks a snapshot instead: the new workspace has the
source's image, resources and secret declarations, its own copy of the
snapshot's disk, and is started at once, resumed from the snapshot's moment
(memory mapped copy-on-write) with its own hostname, machine id and fresh
entropy; its secrets are resolved afresh. The source is not changed. If that
first start fails, the fork is deleted again.

Files: --file HOST:GUEST[:MODE] archives the host file or directory now (later
changes to it do not matter) and the first start puts it at GUEST, creating
parent directories, owned by the image's user, before it reports ready; then
the workspace forgets it. A missing host path creates nothing (exit 2). If the
copy fails, that start fails and the next start tries again.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 1 {
				if name != "" && name != args[0] {
					return usageError("two names given: %q and --name %q", args[0], name)
				}
				name = args[0]
			}
			if name == "" {
				return usageError("create needs a name: microagent create NAME --image REF")
			}
			if fromSnap != "" {
				return createFork(g, c, name, fromSnap)
			}
			if ref == "" {
				return usageError("create needs --image REF")
			}
			if err := workspace.ValidateName(name); err != nil {
				return wsError(err)
			}
			r, err := res.resolve()
			if err != nil {
				return err
			}
			policy, err := parsePullPolicy(pull)
			if err != nil {
				return err
			}
			decls, err := sec.declarations()
			if err != nil {
				return err
			}
			network, err := netf.resolve()
			if err != nil {
				return err
			}
			specs, err := files.resolve()
			if err != nil {
				return err
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			inf, err := workspace.Create(c.Context(), h, workspace.CreateOptions{
				Name:         name,
				Image:        ref,
				Pull:         policy,
				Profile:      res.profile,
				Resources:    workspace.Resources{MemoryMiB: r.MemoryMiB, CPUs: r.CPUs, DiskBytes: r.DiskBytes},
				KernelPath:   kernelPath,
				Progress:     progressWriter(g),
				Secrets:      decls,
				SecretsAudit: sec.audit,
				Network:      network,
				Files:        specs,
			})
			if err != nil {
				return wsError(err)
			}
			// Declaration-time warnings; each start repeats them.
			for _, w := range decls.PlaintextWarnings() {
				fmt.Fprintln(g.stderr, w.String())
			}
			if g.json {
				return g.printJSON(inf)
			}
			fmt.Fprintf(g.stdout, "Created workspace %s (%s, %s); start it with \"microagent start %s\"\n",
				inf.Name, inf.Image, resources(inf.Resources), inf.Name)
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "workspace name (instead of the argument)")
	c.Flags().StringVar(&ref, "image", "", "OCI image reference (required)")
	c.Flags().StringVar(&pull, "pull", "missing", "when to pull the image: missing, always, never")
	c.Flags().StringVar(&kernelPath, "kernel", "", "boot this kernel (vmlinux) instead of the installed default")
	c.Flags().StringVar(&fromSnap, "from-snapshot", "", "fork WS:TAG, a snapshot of another workspace, and start the fork")
	res.add(c)
	sec.add(c, true)
	netf.add(c)
	files.add(c, "at its first start (copied now, put in before start reports ready)", "the image's user")
	return c
}

func newStartCmd(g *globals) *cobra.Command {
	var (
		wait         bool
		sec          secretFlags
		fromSnapshot string
	)
	c := &cobra.Command{
		Use:   "start NAME",
		Short: "Boot a workspace; it keeps running after this command exits",
		Long: `Boot a workspace and return once its guest is ready. The VM runs on under a
detached supervisor process until "microagent halt" or "kill". With --wait,
stay until the workspace stops and exit 0 if it halted, 1 if it failed.

Secrets: the workspace's secret references are resolved before the VM boots,
in this command's environment (env: references, VAULT_ADDR, VAULT_TOKEN ...).
A reference that cannot be resolved fails the start naming the secret and the
reason; the VM is not booted and the workspace stays in the state it was in.
Plaintext schemes are warned about on stderr. --secret, --secret-on-demand and
--secrets-env-file add declarations to the workspace: they are kept for every
later start once this start succeeds. A name (or env file) that is already
declared is refused and nothing is changed (exit 2); declarations cannot be
changed or removed, so to change one, delete the workspace and create it
again. --secrets-audit turns on the audit log (and starts a new, empty one if
the old log is missing, which otherwise refuses the start).

--from-snapshot TAG rolls the workspace back to one of its snapshots: memory,
devices and disk as they were (changes since are lost), then its secrets are
resolved again. Refused, with nothing changed, for a running workspace or a
snapshot this machine cannot resume (another kernel, memory size, CPU count or
accelerator).`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			decls, err := sec.declarations()
			if err != nil {
				return err
			}
			if err := workspace.ValidateName(args[0]); err != nil {
				return wsError(err)
			}
			if fromSnapshot != "" {
				if err := workspace.ValidateTag(fromSnapshot); err != nil {
					return snapError(err)
				}
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			inf, err := workspace.Start(c.Context(), h, workspace.StartOptions{
				Name: args[0], Progress: progressWriter(g),
				Secrets: decls, SecretsAudit: sec.audit, Warnings: g.stderr,
				FromSnapshot: fromSnapshot,
			})
			if err != nil {
				return snapError(err)
			}
			if !wait {
				if g.json {
					return g.printJSON(inf)
				}
				fmt.Fprintf(g.stdout, "Started %s in %.1fs\n", inf.Name, inf.BootSeconds)
				return nil
			}
			if !g.json {
				fmt.Fprintf(g.stdout, "Started %s in %.1fs; waiting for it to stop\n", inf.Name, inf.BootSeconds)
			}
			return waitResult(g, c.Context(), args[0], false)
		},
	}
	c.Flags().BoolVar(&wait, "wait", false, "after starting, wait until the workspace stops")
	c.Flags().StringVar(&fromSnapshot, "from-snapshot", "", "roll back to this snapshot of the workspace (memory, devices and disk)")
	sec.add(c, true)
	return c
}

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

// exitStatus turns a guest exit status into this command's result; with
// --json it prints the summary object, extra fields included.
func exitStatus(g *globals, es channel.ExitStatus, argv0 string, timeout time.Duration, extra map[string]any) error {
	if g.json {
		v := map[string]any{"exitCode": es.Code}
		maps.Copy(v, extra)
		if es.Signal != 0 {
			v["signal"] = es.Signal
		}
		if es.TimedOut {
			v["timedOut"] = true
		}
		if es.Error != "" {
			v["error"] = es.Error
		}
		if err := g.printJSON(v); err != nil {
			return err
		}
	}
	switch {
	case es.Error != "":
		return &ExitError{Code: es.Code, Err: fmt.Errorf("%s: %s", argv0, es.Error)}
	case es.TimedOut:
		return &ExitError{Code: 124, Err: fmt.Errorf("the command timed out after %s and was killed", timeout)}
	case es.Code != 0:
		return &ExitError{Code: es.Code}
	}
	return nil
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

func newHaltCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "halt NAME",
		Short: "Power a workspace off cleanly, keeping its disk",
		Long: `Power a workspace off: the guest stops its processes and syncs its disks,
then the VM quits. Past --timeout the VM is killed. The disk is kept; halting a
workspace that is not running changes nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if timeout < 0 {
				return usageError("--timeout %s: must not be negative", timeout)
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			inf, err := workspace.Halt(c.Context(), h, workspace.HaltOptions{Name: args[0], Timeout: timeout})
			if err != nil {
				return wsError(err)
			}
			return printStopped(g, inf, "Halted")
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", workspace.DefaultHaltTimeout, "how long the graceful power-off may take before the VM is killed")
	return c
}

// printStopped reports a halt or kill; a workspace that ended failed (its
// supervisor died during the halt, say) makes the command fail.
func printStopped(g *globals, inf *workspace.Info, verb string) error {
	if g.json {
		if err := g.printJSON(inf); err != nil {
			return err
		}
	} else if inf.State == workspace.Halted && inf.Reason != "" {
		fmt.Fprintf(g.stdout, "%s %s (%s)\n", verb, inf.Name, inf.Reason)
	} else if inf.State == workspace.Halted || inf.State == workspace.Created {
		fmt.Fprintf(g.stdout, "%s %s\n", verb, inf.Name)
	}
	if inf.State == workspace.Failed {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("workspace %s is stopped but failed: %s", inf.Name, inf.Reason)}
	}
	return nil
}

func newKillCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "kill NAME",
		Short: "Stop a workspace's VM at once (no sync), keeping its disk",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			inf, err := workspace.Kill(c.Context(), h, args[0])
			if err != nil {
				return wsError(err)
			}
			return printStopped(g, inf, "Killed")
		},
	}
}

func newDeleteCmd(g *globals) *cobra.Command {
	var yes, force bool
	c := &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete workspaces and their disks",
		Long: `Delete workspaces and their disks. On a terminal it asks first; elsewhere it
needs --yes. A live workspace is refused unless --force, which kills it first.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			for _, n := range args {
				if err := workspace.ValidateName(n); err != nil {
					return wsError(err)
				}
			}
			if !yes {
				if !isTerminal(g.stdin) {
					return usageError("delete asks for confirmation, and stdin is not a terminal: pass --yes")
				}
				fmt.Fprintf(g.stderr, "Delete %s and %s disk%s? [y/N] ", strings.Join(args, ", "), map[bool]string{true: "their", false: "its"}[len(args) > 1], map[bool]string{true: "s", false: ""}[len(args) > 1])
				line, _ := bufio.NewReader(g.stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					return &ExitError{Code: ExitFailure, Err: errors.New("not deleted")}
				}
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			deleted := []string{}
			var errs []error
			for _, n := range args {
				if err := workspace.Delete(c.Context(), h, workspace.DeleteOptions{Name: n, Force: force}); err != nil {
					errs = append(errs, wsError(err))
					continue
				}
				deleted = append(deleted, n)
				if !g.json {
					fmt.Fprintf(g.stdout, "Deleted %s\n", n)
				}
			}
			if g.json {
				if err := g.printJSON(map[string]any{"deleted": deleted}); err != nil {
					return err
				}
			}
			return joinExitErrors(errs)
		},
	}
	c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	c.Flags().BoolVarP(&force, "force", "f", false, "kill live workspaces first")
	return c
}

// joinExitErrors combines per-workspace errors; the exit code is theirs
// when they agree, else 1.
func joinExitErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == 1 {
		return errs[0]
	}
	code := exitCode(errs[0])
	for _, e := range errs[1:] {
		if exitCode(e) != code {
			code = ExitFailure
		}
	}
	return &ExitError{Code: code, Err: errors.Join(errs...)}
}

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

func resources(r workspace.Resources) string {
	cpu := "CPUs"
	if r.CPUs == 1 {
		cpu = "CPU"
	}
	return fmt.Sprintf("%d MiB, %d %s, %s disk", r.MemoryMiB, r.CPUs, cpu, bytesHuman(r.DiskBytes))
}

func bytesHuman(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show a workspace's state, as observed now",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			i, err := workspace.Status(c.Context(), h, args[0])
			if err != nil {
				return wsError(err)
			}
			if g.json {
				return g.printJSON(i)
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
}

func newLogsCmd(g *globals) *cobra.Command {
	var o workspace.LogsOptions
	c := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a workspace's supervisor log and serial console",
		Long: `Print a workspace's logs: the supervisor's (boots, halts, failures, with
times) and the guest's serial console of the current or last boot. --follow
keeps printing until the workspace stops. With --json, each piece is a JSON
line {"source": "supervisor"|"console", "data": "..."}.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			o.Name = args[0]
			if g.json {
				// One JSON object per piece: {"source":"console","data":"..."}.
				enc := json.NewEncoder(g.stdout)
				err = workspace.LogsFunc(c.Context(), h, o, func(src workspace.LogSource, b []byte) error {
					return enc.Encode(map[string]string{"source": string(src), "data": string(b)})
				})
			} else {
				err = workspace.Logs(c.Context(), h, o, g.stdout)
			}
			return wsError(err)
		},
	}
	c.Flags().BoolVarP(&o.Follow, "follow", "f", false, "keep printing new output until the workspace stops")
	c.Flags().BoolVar(&o.Console, "console", false, "only the guest's serial console")
	c.Flags().BoolVar(&o.Supervisor, "supervisor", false, "only the supervisor's log (boots, halts, failures)")
	return c
}

func newWaitCmd(g *globals) *cobra.Command {
	var running bool
	c := &cobra.Command{
		Use:   "wait NAME",
		Short: "Wait until a workspace stops (exit 0 if it halted, 1 if it failed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return waitResult(g, c.Context(), args[0], running)
		},
	}
	c.Flags().BoolVar(&running, "running", false, "wait until it runs instead (exit 1 if it stops)")
	return c
}

func waitResult(g *globals, ctx context.Context, name string, running bool) error {
	h, err := g.home()
	if err != nil {
		return err
	}
	inf, err := workspace.Wait(ctx, h, workspace.WaitOptions{Name: name, Running: running})
	if inf != nil {
		if g.json {
			if perr := g.printJSON(inf); perr != nil {
				return perr
			}
		} else if inf.Reason != "" {
			fmt.Fprintf(g.stdout, "%s: %s (%s)\n", inf.Name, inf.State, inf.Reason)
		} else {
			fmt.Fprintf(g.stdout, "%s: %s\n", inf.Name, inf.State)
		}
	}
	if err != nil {
		return wsError(err)
	}
	if inf.State == workspace.Failed {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("workspace %s failed: %s", inf.Name, inf.Reason)}
	}
	return nil
}

func newGCCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Repair workspace state after crashes: leftovers, orphan processes, stale sockets",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			h, err := g.home()
			if err != nil {
				return err
			}
			rep, err := workspace.GC(c.Context(), h)
			if err != nil {
				return wsError(err)
			}
			if g.json {
				return g.printJSON(rep)
			}
			for _, n := range rep.Removed {
				fmt.Fprintf(g.stdout, "removed leftover %s\n", n)
			}
			for _, n := range rep.Repaired {
				fmt.Fprintf(g.stdout, "repaired %s\n", n)
			}
			for _, p := range rep.Killed {
				fmt.Fprintf(g.stdout, "stopped orphan process %d\n", p)
			}
			for _, n := range rep.Skipped {
				fmt.Fprintf(g.stdout, "skipped %s (busy)\n", n)
			}
			if len(rep.Removed)+len(rep.Repaired)+len(rep.Killed)+len(rep.Skipped) == 0 {
				fmt.Fprintln(g.stdout, "nothing to repair")
			}
			return nil
		},
	}
}

// newSuperviseCmd is the hidden command Start runs in the background as a
// workspace's supervisor: package supervisor parses its own command line.
func newSuperviseCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: supervisor.CommandName, Hidden: true, DisableFlagParsing: true,
		RunE: func(c *cobra.Command, _ []string) error { return supervisor.Main(c.Context(), os.Args, g.stderr) }}
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
