package channel

import (
	"context"
	"fmt"
	"net"
)

// OpenRaw opens a stream, sends h as its first frame and returns the stream
// for the caller to speak the operation's frames on. A relay (the workspace
// supervisor) uses it to splice a client's exec stream through to the guest
// without parsing it. ctx bounds the opening only.
func (c *Client) OpenRaw(ctx context.Context, h Header) (net.Conn, error) {
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("channel: open stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { st.Close() })
	err = WriteJSON(st, FrameHeader, h)
	if !stop() || ctx.Err() != nil {
		st.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		st.Close()
		return nil, c.streamErr(ctx, h.Op, err)
	}
	return st, nil
}
