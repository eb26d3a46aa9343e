package supervisor

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/errcode"
	"github.com/microagent-dev/microagent/wsdir"
)

// relay splices a client's copy stream to a new guest stream, as exec
// does: the copy protocol is framed end to end.
func (s *supervisor) relay(c net.Conn, req Request) {
	defer c.Close()
	if req.Copy == nil {
		reply(c, Reply{Error: "copy without a request"})
		return
	}
	s.splice(c, channel.Header{Op: string(req.Op), Copy: req.Copy}, false)
}

// exec splices the client's exec stream to a new guest stream (see
// splice); the guest kills the process group when the stream ends early.
func (s *supervisor) exec(c net.Conn, req Request) {
	defer c.Close()
	if req.Exec == nil || len(req.Exec.Argv) == 0 {
		reply(c, Reply{Error: "exec without a command"})
		return
	}
	s.splice(c, channel.Header{Op: channel.OpExec, Exec: req.Exec}, true)
}

// splice opens a guest stream with header h and joins the client's
// connection to it. The exec and copy protocols are framed end to end, so
// the bytes pass through unparsed; when the client goes away the guest
// stream is closed. Only a running, unpaused workspace takes streams;
// counted streams show as execs in status.
func (s *supervisor) splice(c net.Conn, h channel.Header, counted bool) {
	s.mu.Lock()
	err := s.refuseStreams()
	if err == nil && counted {
		s.execs++
	}
	s.mu.Unlock()
	if err != nil {
		reply(c, errorReply(err))
		return
	}
	if counted {
		defer func() {
			s.mu.Lock()
			s.execs--
			s.mu.Unlock()
		}()
	}
	st, err := s.openStream(h)
	if err != nil {
		reply(c, errorReply(err))
		return
	}
	defer st.Close()
	if err := reply(c, Reply{}); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(st, c)
		st.Close() // EOF to the guest: the client is gone (or done)
		close(done)
	}()
	io.Copy(c, st)
	c.Close()
	<-done
}

// streamOpenTimeout bounds opening a guest stream and the agent's
// acceptance of its header.
const streamOpenTimeout = 30 * time.Second

// openStream opens a guest stream with header h, for an exec or copy the
// supervisor splices through or a job it drives itself.
func (s *supervisor) openStream(h channel.Header) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), streamOpenTimeout)
	defer cancel()
	st, err := s.vm.Client.OpenRaw(ctx, h)
	if err != nil {
		return nil, &wsdir.Error{Name: s.w.Name, Op: "open a guest stream", Err: err}
	}
	return st, nil
}

// refuseStreams says why the workspace takes no new guest streams (nil
// when it is running and not paused). s.mu must be held.
func (s *supervisor) refuseStreams() error {
	switch {
	case s.phase == wsdir.Running && s.paused:
		return errcode.With(wsdir.ErrPaused, fmt.Sprintf("workspace %s is paused: resume it first (\"microagent resume %s\")", s.w.Name, s.w.Name))
	case s.phase != wsdir.Running:
		return errcode.With(wsdir.ErrBusy, fmt.Sprintf("workspace %s is %s", s.w.Name, s.phase))
	}
	return nil
}

// sameUser checks the peer's credentials.
func sameUser(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return cerr == nil && cred != nil && int(cred.Uid) == os.Getuid()
}
