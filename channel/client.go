package channel

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Client is the host side of a connection to the guest agent.
type Client struct {
	conn  net.Conn
	sess  *yamux.Session
	fetch fetchHandler
}

// Connect performs the handshake on conn and starts the session. It returns
// when the agent has answered, when ctx ends, or when conn fails; a guest that
// has not booted yet simply has not answered. On error conn is closed.
func Connect(ctx context.Context, conn net.Conn) (*Client, error) {
	return connect(ctx, conn, HostHandshake)
}

// Reconnect is Connect for a guest resumed from a snapshot, whose agent may
// still be in the saved session: see ResyncHandshake.
func Reconnect(ctx context.Context, conn net.Conn) (*Client, error) {
	return connect(ctx, conn, func(rw io.ReadWriter, nonce string) error {
		return ResyncHandshake(rw, nonce, 50*time.Millisecond)
	})
}

func connect(ctx context.Context, conn net.Conn, handshake func(io.ReadWriter, string) error) (*Client, error) {
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		conn.Close()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err := handshake(conn, hex.EncodeToString(nb[:]))
	if !stop() || ctx.Err() != nil {
		conn.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	sess, err := yamux.Client(conn, hostYamuxConfig())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("channel: start session: %w", err)
	}
	c := &Client{conn: conn, sess: sess}
	go c.serveGuest(context.WithoutCancel(ctx))
	return c, nil
}

// Close ends the session and the connection.
func (c *Client) Close() error { return c.sess.Close() }

// Closed is closed when the session ends (the guest went away).
func (c *Client) Closed() <-chan struct{} { return c.sess.CloseChan() }

// call runs a request whose answer is one Reply frame.
func (c *Client) call(ctx context.Context, h Header) (*Reply, error) {
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("channel: open stream: %w", err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	if err := WriteJSON(st, FrameHeader, h); err != nil {
		return nil, c.streamErr(ctx, h.Op, err)
	}
	var r Reply
	if err := ReadJSON(st, FrameReply, &r); err != nil {
		return nil, c.streamErr(ctx, h.Op, err)
	}
	if r.Error != "" {
		return &r, fmt.Errorf("guest: %s: %w", h.Op, r.Err())
	}
	return &r, nil
}

func (c *Client) streamErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("channel: %s: %w", op, err)
}

// Hello configures the guest session and returns its status.
func (c *Client) Hello(ctx context.Context, req HelloRequest) (*HelloReply, error) {
	r, err := c.call(ctx, Header{Op: OpHello, Hello: &req})
	if err != nil {
		return nil, err
	}
	if r.Hello == nil {
		return nil, errors.New("channel: hello: empty reply")
	}
	return r.Hello, nil
}

// Shutdown asks the agent to stop every process and sync its disks. The VM
// can be powered off once it returns.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := c.call(ctx, Header{Op: OpShutdown})
	return err
}

// Process is a process started in the guest, seen through its exec stream:
// a yamux stream of the guest session (Client.Start), or any stream that
// carries the exec protocol once its header was sent (the supervisor's
// socket after it spliced an exec through: NewProcess).
type Process struct {
	st   io.ReadWriteCloser
	wmu  sync.Mutex
	stop func() bool
}

// NewProcess is the process whose exec stream is st (the header already
// sent); it closes st when ctx ends.
func NewProcess(ctx context.Context, st io.ReadWriteCloser) *Process {
	return &Process{st: st, stop: context.AfterFunc(ctx, func() { st.Close() })}
}

// Start starts a process. Use Wait to stream its output and learn its exit.
func (c *Client) Start(ctx context.Context, req ExecRequest) (*Process, error) {
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("channel: open stream: %w", err)
	}
	p := NewProcess(ctx, st)
	if err := p.write(FrameHeader, nil, Header{Op: OpExec, Exec: &req}); err != nil {
		p.stop()
		st.Close()
		return nil, c.streamErr(ctx, OpExec, err)
	}
	return p, nil
}

func (p *Process) write(t FrameType, b []byte, v any) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if v != nil {
		return WriteJSON(p.st, t, v)
	}
	return WriteFrame(p.st, t, b)
}

// Write sends stdin bytes (the request must have set Stdin).
func (p *Process) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		chunk := b
		if len(chunk) > 32<<10 {
			chunk = chunk[:32<<10]
		}
		if err := p.write(FrameStdin, chunk, nil); err != nil {
			return n, err
		}
		n += len(chunk)
		b = b[len(chunk):]
	}
	return n, nil
}

// CloseStdin sends end-of-file on the process's stdin.
func (p *Process) CloseStdin() error { return p.write(FrameStdinEOF, nil, nil) }

// Signal sends a signal to the process's group.
func (p *Process) Signal(sig int) error { return p.write(FrameSignal, []byte{byte(sig)}, nil) }

// Resize changes the terminal size of a TTY process.
func (p *Process) Resize(rows, cols uint16) error {
	var b [4]byte
	binary.BigEndian.PutUint16(b[:2], rows)
	binary.BigEndian.PutUint16(b[2:], cols)
	return p.write(FrameResize, b[:], nil)
}

// Wait copies the process's output to stdout and stderr until it exits and
// returns its exit status. A nil writer discards that stream.
func (p *Process) Wait(stdout, stderr io.Writer) (ExitStatus, error) {
	defer p.st.Close()
	defer p.stop()
	buf := make([]byte, 64<<10)
	for {
		t, b, err := ReadFrame(p.st, buf)
		if err != nil {
			return ExitStatus{}, &LostError{Err: err}
		}
		var w io.Writer
		switch t {
		case FrameStdout:
			w = stdout
		case FrameStderr:
			w = stderr
		case FrameExit:
			var es ExitStatus
			if err := jsonUnmarshal(b, &es); err != nil {
				return ExitStatus{}, err
			}
			return es, nil
		case FrameReply:
			// The guest refused the exec before starting anything.
			var r Reply
			if jsonUnmarshal(b, &r) == nil && r.Error != "" {
				return ExitStatus{}, fmt.Errorf("guest: %s", r.Error)
			}
			return ExitStatus{}, errors.New("channel: exec: unexpected reply from the guest")
		default:
			return ExitStatus{}, fmt.Errorf("channel: exec: unexpected frame type %d", t)
		}
		if w != nil {
			if _, err := w.Write(b); err != nil {
				return ExitStatus{}, fmt.Errorf("channel: exec: write output: %w", err)
			}
		}
	}
}

// LostError is an exec stream that ended before the exit status arrived:
// usually the VM stopped, or the session was lost.
type LostError struct{ Err error }

func (e *LostError) Error() string {
	return "channel: exec: connection to the guest lost: " + e.Err.Error()
}
func (e *LostError) Unwrap() error { return e.Err }

// Exec runs a process to completion: stdin (when not nil and req.Stdin is
// set) is copied in, output is copied out.
func (c *Client) Exec(ctx context.Context, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (ExitStatus, error) {
	if stdin == nil {
		req.Stdin = false
	}
	p, err := c.Start(ctx, req)
	if err != nil {
		return ExitStatus{}, err
	}
	if req.Stdin {
		go func() {
			// The copy ends with the stream; an error here means the process
			// is gone, which Wait reports.
			if _, err := io.Copy(p, stdin); err == nil {
				p.CloseStdin()
			}
		}()
	}
	es, err := p.Wait(stdout, stderr)
	if err != nil && ctx.Err() != nil {
		return es, ctx.Err()
	}
	return es, err
}
