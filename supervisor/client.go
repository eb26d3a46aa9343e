package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/wsdir"
)

// Client talks to one workspace's supervisor over its socket. Each call is
// one connection; the stream calls (Exec, CopyIn, CopyOut) hand the
// connection to the caller once the supervisor has accepted them.
type Client struct {
	w *wsdir.Dir
}

// NewClient is a client of workspace w's supervisor.
func NewClient(w *wsdir.Dir) *Client { return &Client{w: w} }

// NotListening reports dial errors that mean no supervisor is there (the
// workspace is not running, or has just stopped).
func NotListening(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// call sends one request and reads the reply. A reply that carries an
// error is returned as a *RemoteError (the connection closed); otherwise
// the connection stays open for the caller.
func (c *Client) call(ctx context.Context, req Request) (net.Conn, *Reply, error) {
	req.Version = ProtocolVersion
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.w.SockPath())
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	fail := func(err error) (net.Conn, *Reply, error) {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
	if err := channel.WriteJSON(conn, channel.FrameHeader, req); err != nil {
		return fail(fmt.Errorf("send %s request to the supervisor: %w", req.Op, err))
	}
	var r Reply
	if err := channel.ReadJSON(conn, channel.FrameReply, &r); err != nil {
		return fail(fmt.Errorf("read the supervisor's %s reply: %w", req.Op, err))
	}
	if !stop() {
		conn.Close()
		return nil, nil, ctx.Err()
	}
	if r.Version != ProtocolVersion && !req.Op.stable() {
		conn.Close()
		return nil, nil, &RemoteError{Err: versionError(c.w.Name, r.Version)}
	}
	if err := r.Err(); err != nil {
		conn.Close()
		return nil, nil, &RemoteError{Err: err}
	}
	return conn, &r, nil
}

// RemoteError is a refusal the supervisor answered with (as opposed to a
// supervisor that could not be reached). Its message is the supervisor's;
// errors.Is sees the sentinels it named.
type RemoteError struct{ Err error }

func (e *RemoteError) Error() string { return e.Err.Error() }
func (e *RemoteError) Unwrap() error { return e.Err }

// do runs a request whose answer is the reply alone and decodes its data
// into out (when not nil).
func (c *Client) do(ctx context.Context, req Request, out any) error {
	conn, r, err := c.call(ctx, req)
	if err != nil {
		return err
	}
	conn.Close()
	if out == nil || len(r.Data) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return fmt.Errorf("supervisor %s reply: %w", req.Op, err)
	}
	return nil
}

// Status asks the supervisor what it sees.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, Request{Op: OpStatus}, &s)
}

// Halt asks for a graceful power-off within timeout (then a forced one)
// and waits for the VM to stop; the status is the boot's final one.
func (c *Client) Halt(ctx context.Context, timeout time.Duration) (*Status, error) {
	var s Status
	return &s, c.do(ctx, Request{Op: OpHalt, Timeout: timeout}, &s)
}

// Kill stops the VM at once and waits for it to stop.
func (c *Client) Kill(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, Request{Op: OpKill}, &s)
}

// Pause stops the guest's CPUs.
func (c *Client) Pause(ctx context.Context) error { return c.do(ctx, Request{Op: OpPause}, nil) }

// Resume runs a paused guest again (clock, entropy and purged secrets are
// brought back up to date).
func (c *Client) Resume(ctx context.Context) error { return c.do(ctx, Request{Op: OpResume}, nil) }

// UpdateEgress puts n's egress policy in force in the running network
// (vmm.ErrEgressFixed when that network cannot change).
func (c *Client) UpdateEgress(ctx context.Context, n wsdir.NetworkConfig) error {
	return c.do(ctx, Request{Op: OpEgress, Network: &n}, nil)
}

// Snapshot captures the machine into snapshots/<tag>.
func (c *Client) Snapshot(ctx context.Context, tag string) (*wsdir.Snapshot, error) {
	var s wsdir.Snapshot
	if err := c.do(ctx, Request{Op: OpSnapshot, Tag: tag}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Exec opens an exec stream: the connection then carries the guest's exec
// protocol (see channel.Process).
func (c *Client) Exec(ctx context.Context, req channel.ExecRequest) (net.Conn, error) {
	conn, _, err := c.call(ctx, Request{Op: OpExec, Exec: &req})
	return conn, err
}

// CopyIn opens a copy into the guest: the connection then carries the
// guest's copy protocol (see channel.CopyIn).
func (c *Client) CopyIn(ctx context.Context, req channel.CopyRequest) (net.Conn, error) {
	conn, _, err := c.call(ctx, Request{Op: OpCopyIn, Copy: &req})
	return conn, err
}

// CopyOut opens a copy out of the guest (see channel.CopyOut).
func (c *Client) CopyOut(ctx context.Context, req channel.CopyRequest) (net.Conn, error) {
	conn, _, err := c.call(ctx, Request{Op: OpCopyOut, Copy: &req})
	return conn, err
}

// StartJob starts a job in the guest (see JobRequest): it runs on in the
// supervisor whatever becomes of this client.
func (c *Client) StartJob(ctx context.Context, r JobRequest) (*JobStatus, error) {
	if err := CheckJob(&r, true); err != nil {
		return nil, err
	}
	var s JobStatus
	return &s, c.do(ctx, Request{Op: OpJobStart, Job: &r}, &s)
}

// WaitJob waits for the job to end and returns how it ended (ErrNoJob when
// this boot never ran it). Ending ctx ends the wait, not the job.
func (c *Client) WaitJob(ctx context.Context, name string) (*JobStatus, error) {
	return c.job(ctx, JobRequest{Name: name})
}

// Job returns the job's status now, running or ended (ErrNoJob when this
// boot never ran it).
func (c *Client) Job(ctx context.Context, name string) (*JobStatus, error) {
	return c.job(ctx, JobRequest{Name: name, NoWait: true})
}

func (c *Client) job(ctx context.Context, r JobRequest) (*JobStatus, error) {
	if err := CheckJob(&r, false); err != nil {
		return nil, err
	}
	var s JobStatus
	return &s, c.do(ctx, Request{Op: OpJobWait, Job: &r}, &s)
}

// PortForward connects to TCP port on the guest's 127.0.0.1: the
// connection then carries that TCP connection's bytes; CloseWrite on it
// (a *net.UnixConn) is passed on to the guest as a half-close. A port
// nothing listens on fails with an error wrapping channel.ErrPortRefused.
func (c *Client) PortForward(ctx context.Context, port uint16) (net.Conn, error) {
	conn, _, err := c.call(ctx, Request{Op: OpPortForward, PortForward: &channel.PortForwardRequest{Port: port}})
	return conn, err
}
