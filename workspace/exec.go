package workspace

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/home"
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
	conn, r, err := w.supCall(ctx, supRequest{Op: opExec, Exec: &req})
	if err != nil {
		if ctx.Err() != nil {
			return channel.ExitStatus{}, ctx.Err()
		}
		return channel.ExitStatus{}, w.notRunningError(err)
	}
	if r.Error != "" {
		conn.Close()
		if obs, oerr := w.observe(); oerr == nil && obs.state == Halting {
			return channel.ExitStatus{}, fmt.Errorf("workspace %s is halting (%w)", o.Name, ErrBusy)
		}
		return channel.ExitStatus{}, fmt.Errorf("exec in %s: %s", o.Name, r.Error)
	}
	return w.runExec(ctx, conn, o)
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

// execConn is the client end of an exec stream.
type execConn struct {
	c   net.Conn
	wmu sync.Mutex
}

func (e *execConn) frame(t channel.FrameType, b []byte) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	return channel.WriteFrame(e.c, t, b)
}

func (w *wsDir) runExec(ctx context.Context, conn net.Conn, o ExecOptions) (channel.ExitStatus, error) {
	defer conn.Close()
	e := &execConn{c: conn}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	done := make(chan struct{})
	defer close(done)
	if o.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := o.Stdin.Read(buf)
				if n > 0 && e.frame(channel.FrameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					if err == io.EOF {
						e.frame(channel.FrameStdinEOF, nil)
					}
					return
				}
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
					e.frame(channel.FrameSignal, []byte{byte(sig)})
				case ws, ok := <-o.Resizes:
					if !ok {
						o.Resizes = nil
						continue
					}
					var b [4]byte
					binary.BigEndian.PutUint16(b[:2], ws.Rows)
					binary.BigEndian.PutUint16(b[2:], ws.Cols)
					e.frame(channel.FrameResize, b[:])
				}
			}
		}()
	}
	buf := make([]byte, 64<<10)
	for {
		t, b, err := channel.ReadFrame(conn, buf)
		if err != nil {
			if ctx.Err() != nil {
				return channel.ExitStatus{}, ctx.Err()
			}
			return channel.ExitStatus{}, w.lostError(err)
		}
		var out io.Writer
		switch t {
		case channel.FrameStdout:
			out = o.Stdout
		case channel.FrameStderr:
			out = o.Stderr
		case channel.FrameExit:
			var es channel.ExitStatus
			if err := json.Unmarshal(b, &es); err != nil {
				return es, fmt.Errorf("exec in %s: bad exit frame: %w", w.Name, err)
			}
			return es, nil
		case channel.FrameReply:
			var r channel.Reply
			if json.Unmarshal(b, &r) == nil && r.Error != "" {
				return channel.ExitStatus{}, fmt.Errorf("exec in %s: guest: %s", w.Name, r.Error)
			}
			return channel.ExitStatus{}, fmt.Errorf("exec in %s: unexpected reply from the guest", w.Name)
		default:
			return channel.ExitStatus{}, fmt.Errorf("exec in %s: unexpected frame type %d", w.Name, t)
		}
		if out != nil {
			if _, err := out.Write(b); err != nil {
				return channel.ExitStatus{}, fmt.Errorf("exec in %s: write output: %w", w.Name, err)
			}
		}
	}
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
