package channel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/microagent-dev/microagent/errcode"
)

// OpPortForward (host to guest) connects to a TCP port on the guest's
// loopback (127.0.0.1 in the guest) and carries the connection's bytes.
// The host sends the Header; the guest dials and answers with one
// FrameReply (an error, with its codes, when the dial failed). After a
// reply without an error the stream carries the connection's bytes
// unframed both ways, and the yamux window is its flow control: closing
// a side of the stream (a yamux FIN) is the TCP half-close of that
// direction. The guest's network interface plays no part, so it works in
// an isolated workspace too.
const OpPortForward = "portforward"

// PortForwardRequest is the body of OpPortForward.
type PortForwardRequest struct {
	// Port is the TCP port on the guest's 127.0.0.1.
	Port uint16 `json:"port"`
}

// ErrPortRefused: nothing in the guest listens on the forwarded port.
var ErrPortRefused = errors.New("connection refused")

func init() { errcode.Register("port_refused", ErrPortRefused) }

// maxPortForwardReply bounds the guest's answer to OpPortForward: an
// error message and its codes, never a size the host would allocate.
const maxPortForwardReply = 4 << 10

// portForwardReplyTimeout bounds the wait for the guest's answer: its
// dial of a loopback port (which the agent bounds to 10 s) on an emulated
// CPU that may be busy.
var portForwardReplyTimeout = durationVar(30 * time.Second)

// PortForward opens a connection to port on the guest's loopback (see
// OpPortForward) and returns it once the guest has connected. ctx bounds
// the opening only. The connection is a yamux stream, whose Close is a
// half-close: the guest's server reads EOF, and the stream reads on until
// the guest closes its side too, for at most the stream close timeout
// (30 s) after which yamux resets it. A guest answer that is not a well-formed reply within the bound and in
// time fails with an error saying what was wrong; a refused port wraps
// ErrPortRefused.
func (c *Client) PortForward(ctx context.Context, port uint16) (net.Conn, error) {
	if port == 0 {
		return nil, errors.New("channel: port-forward: port 0 is not a port")
	}
	st, err := c.OpenRaw(ctx, Header{Op: OpPortForward, PortForward: &PortForwardRequest{Port: port}})
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.SetReadDeadline(time.Unix(1, 0)) })
	wait := time.Duration(portForwardReplyTimeout.Load())
	st.SetReadDeadline(time.Now().Add(wait))
	t, b, err := ReadFrameLimit(st, nil, maxPortForwardReply)
	if !stop() || ctx.Err() != nil {
		st.Close()
		return nil, ctx.Err()
	}
	st.SetReadDeadline(time.Time{})
	var ne net.Error
	fail := func(format string, args ...any) (net.Conn, error) {
		st.Close()
		return nil, fmt.Errorf("channel: port-forward to guest port %d: "+format, append([]any{port}, args...)...)
	}
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		return fail("the guest's answer is longer than the %d bytes it may be", maxPortForwardReply)
	case errors.As(err, &ne) && ne.Timeout():
		return fail("the guest did not answer within %s", wait)
	case err != nil:
		return fail("the guest's answer was cut short: %w", err)
	case t != FrameReply:
		return fail("the guest answered with a frame of type %d, not a reply", t)
	}
	var r Reply
	if err := jsonUnmarshal(b, &r); err != nil {
		return fail("the guest's answer is not a reply: %w", err)
	}
	if r.Error != "" {
		st.Close()
		return nil, fmt.Errorf("guest: %w", r.Err())
	}
	return st, nil
}
