package workspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/channel"
)

// The supervisor speaks the channel framing on its socket: the client sends
// one FrameHeader holding a supRequest, the supervisor answers with one
// FrameReply holding a channel.Reply. For exec, the stream then carries the
// guest's exec protocol unchanged (the supervisor splices it through).
const (
	opStatus = "status"
	opExec   = channel.OpExec
	opHalt   = "halt"
	opKill   = "kill"
	// Pause, resume and snapshot are control requests: one reply.
	opPause    = "pause"
	opResume   = "resume"
	opSnapshot = "snapshot"
)

type supRequest struct {
	Op   string               `json:"op"`
	Exec *channel.ExecRequest `json:"exec,omitempty"`
	// Copy is the body of channel.OpCopyIn and OpCopyOut.
	Copy *channel.CopyRequest `json:"copy,omitempty"`
	// Timeout bounds a halt's graceful part.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Tag names the snapshot to capture.
	Tag string `json:"tag,omitempty"`
}

// supStatus is the data of a status reply.
type supStatus struct {
	State  State  `json:"state"`
	Reason string `json:"reason,omitempty"`
	Execs  int    `json:"execs"`
	VMMPID int    `json:"vmmPid"`
}

// dialSup connects to the workspace's supervisor.
func (w *wsDir) dialSup(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", w.SockPath())
}

// supNotListening reports dial errors that mean no supervisor is there.
func supNotListening(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

// supCall sends one request and reads the reply; for exec the connection
// stays open for the caller.
func (w *wsDir) supCall(ctx context.Context, req supRequest) (net.Conn, *channel.Reply, error) {
	conn, err := w.dialSup(ctx)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	fail := func(err error) (net.Conn, *channel.Reply, error) {
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
	var r channel.Reply
	if err := channel.ReadJSON(conn, channel.FrameReply, &r); err != nil {
		return fail(fmt.Errorf("read the supervisor's %s reply: %w", req.Op, err))
	}
	if !stop() {
		conn.Close()
		return nil, nil, ctx.Err()
	}
	return conn, &r, nil
}

func (w *wsDir) supStatus(ctx context.Context) (*supStatus, error) {
	conn, r, err := w.supCall(ctx, supRequest{Op: opStatus})
	if err != nil {
		return nil, err
	}
	conn.Close()
	if r.Error != "" {
		return nil, errors.New(r.Error)
	}
	var s supStatus
	if err := json.Unmarshal(r.Data, &s); err != nil {
		return nil, fmt.Errorf("supervisor status: %w", err)
	}
	return &s, nil
}
