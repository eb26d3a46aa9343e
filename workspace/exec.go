package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/supervisor"
)

// ExecOptions say what to run in a running workspace.
type ExecOptions struct {
	Name string
	// Argv is the command; it is run as given (the image's Entrypoint is
	// not prepended).
	Argv []string
	// Env entries override the image's environment.
	Env []string
	// Cwd and User override the image's WorkingDir and User.
	Cwd, User string
	// Timeout kills the command's process group after this long (0: none);
	// the exit status then has TimedOut set.
	Timeout time.Duration
	// TTY runs the command on a pseudo-terminal of Rows x Cols; its output
	// then all arrives on Stdout.
	TTY        bool
	Rows, Cols uint16
	// Stdin is copied to the command (nil: the command reads /dev/null).
	// Exec returns when the command exits, possibly while a goroutine is
	// still blocked reading Stdin; it ends at Stdin's next read.
	Stdin io.Reader
	// Stdout and Stderr receive the output (nil discards it).
	Stdout, Stderr io.Writer
	// Signals are forwarded to the command's process group.
	Signals <-chan syscall.Signal
	// Resizes change the terminal size of a TTY command.
	Resizes <-chan WindowSize
}

// WindowSize is a terminal size.
type WindowSize struct{ Rows, Cols uint16 }

// Exec runs a command in a running workspace through its supervisor and
// returns its exit status; it takes no lock, so any number of execs run
// side by side. When ctx ends the stream is closed and the guest kills the
// command's process group. A workspace that is not running yields an error
// wrapping ErrNotRunning (ErrBusy while it is starting or halting).
func Exec(ctx context.Context, h home.Home, o ExecOptions) (channel.ExitStatus, error) {
	if err := ValidateName(o.Name); err != nil {
		return channel.ExitStatus{}, err
	}
	if len(o.Argv) == 0 {
		return channel.ExitStatus{}, errors.New("exec: no command given")
	}
	w := newWS(h, o.Name)
	req := channel.ExecRequest{
		Argv: o.Argv, Env: o.Env, Cwd: o.Cwd, User: o.User, Timeout: o.Timeout,
		Stdin: o.Stdin != nil, TTY: o.TTY, Rows: o.Rows, Cols: o.Cols,
	}
	conn, err := w.stream(ctx, "exec", func(c *supervisor.Client) (net.Conn, error) { return c.Exec(ctx, req) })
	if err != nil {
		return channel.ExitStatus{}, err
	}
	return w.runExec(ctx, conn, o)
}

// stream opens an exec, copy or port-forward stream (what) through the
// supervisor: a supervisor that cannot be reached is explained from the
// observed state, its refusal quoted.
func (w *wsDir) stream(ctx context.Context, what string, open func(*supervisor.Client) (net.Conn, error)) (net.Conn, error) {
	conn, err := open(supervisor.NewClient(w.Dir))
	if err != nil {
		return nil, w.supervisorErr(ctx, what, err)
	}
	return conn, nil
}

// supervisorErr explains an error from a request (what) to the
// supervisor: one that cannot be reached from the observed state, a
// refusal quoted.
func (w *wsDir) supervisorErr(ctx context.Context, what string, err error) error {
	var refused *supervisor.RemoteError
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &refused):
		if obs, oerr := w.observe(); oerr == nil && obs.state == Halting {
			return fmt.Errorf("workspace %s is halting (%w)", w.Name, ErrBusy)
		}
		return fmt.Errorf("%s in %s: %w", what, w.Name, err)
	}
	return w.notRunningError(err)
}

// notRunningError explains, from the observed state, why the supervisor
// could not be reached.
func (w *wsDir) notRunningError(dialErr error) error {
	if _, err := open(w.Home, w.Name); err != nil {
		return err
	}
	obs, err := w.observe()
	if err != nil {
		return err
	}
	switch obs.state {
	case Starting, Halting:
		return fmt.Errorf("workspace %s is %s (%w): try again when it has finished", w.Name, obs.state, ErrBusy)
	case Running:
		return fmt.Errorf("workspace %s: its supervisor (pid %d) does not answer (%v): run \"microagent kill %s\" and start it again",
			w.Name, obs.rec.Supervisor.PID, dialErr, w.Name)
	case Failed:
		return fmt.Errorf("%w: %s failed (%s): run \"microagent start %s\"", ErrNotRunning, w.Name, obs.reason, w.Name)
	}
	return fmt.Errorf("%w: %s is %s: run \"microagent start %s\" first", ErrNotRunning, w.Name, obs.state, w.Name)
}

// runExec drives the exec stream conn (see channel.Process): stdin,
// signals and resizes in, output out, until the exit status.
func (w *wsDir) runExec(ctx context.Context, conn net.Conn, o ExecOptions) (channel.ExitStatus, error) {
	p := channel.NewProcess(ctx, conn)
	done := make(chan struct{})
	defer close(done)
	if o.Stdin != nil {
		go func() {
			// The copy ends with the stream; an error here means the
			// process is gone, which Wait reports.
			if _, err := io.Copy(p, o.Stdin); err == nil {
				p.CloseStdin()
			}
		}()
	}
	if o.Signals != nil || o.Resizes != nil {
		go func() {
			for {
				select {
				case <-done:
					return
				case sig, ok := <-o.Signals:
					if !ok {
						o.Signals = nil
						continue
					}
					p.Signal(int(sig))
				case ws, ok := <-o.Resizes:
					if !ok {
						o.Resizes = nil
						continue
					}
					p.Resize(ws.Rows, ws.Cols)
				}
			}
		}()
	}
	es, err := p.Wait(o.Stdout, o.Stderr)
	var lost *channel.LostError
	switch {
	case err == nil:
		return es, nil
	case ctx.Err() != nil:
		return es, ctx.Err()
	case errors.As(err, &lost):
		return es, w.lostError(lost.Err)
	}
	return es, fmt.Errorf("exec in %s: %w", w.Name, err)
}

// lostError explains a stream that ended without an exit status: usually
// the VM stopped.
func (w *wsDir) lostError(err error) error {
	msg := fmt.Sprintf("exec in %s: the connection to the workspace was lost before the command exited (%v)", w.Name, err)
	if obs, oerr := w.observe(); oerr == nil && obs.state != Running {
		msg += fmt.Sprintf("; the workspace is %s", obs.state)
		if obs.reason != "" {
			msg += ": " + obs.reason
		}
	}
	return errors.New(msg)
}
