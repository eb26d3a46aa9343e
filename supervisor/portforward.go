package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/microagent-dev/microagent/errcode"
	"github.com/microagent-dev/microagent/internal/relay"
	"github.com/microagent-dev/microagent/wsdir"
)

// MaxForwards bounds the port-forward connections open at once through
// one workspace's supervisor. Each costs the host two goroutines and up
// to a yamux window (1 MiB) of bytes from the guest that the client has
// not read yet, so 64 hold at most about 64 MiB; the host, not the
// guest, decides how many there are.
const MaxForwards = 64

// portForwardOpen bounds opening the guest stream and the guest's answer
// (which the channel bounds to 30 s itself).
const portForwardOpen = time.Minute

// portForward connects the client to a TCP port on the guest's loopback:
// after the reply the connection carries that TCP connection's bytes,
// each side's half-close passed on.
func (s *supervisor) portForward(c net.Conn, req Request) {
	defer c.Close()
	if req.PortForward == nil || req.PortForward.Port == 0 {
		reply(c, errorReply(errors.New("port-forward without a port")))
		return
	}
	port := req.PortForward.Port
	s.mu.Lock()
	err := s.refuseStreams()
	if err == nil && s.forwards >= MaxForwards {
		err = errcode.With(wsdir.ErrBusy, fmt.Sprintf("workspace %s already has %d port-forward connections open, the most it takes: close one and retry", s.w.Name, MaxForwards))
	}
	if err == nil {
		s.forwards++
	}
	s.mu.Unlock()
	if err != nil {
		reply(c, errorReply(err))
		return
	}
	defer func() {
		s.mu.Lock()
		s.forwards--
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), portForwardOpen)
	st, err := s.vm.Client.PortForward(ctx, port)
	cancel()
	if err != nil {
		reply(c, errorReply(err)) // it names the port and what went wrong
		return
	}
	defer st.Close()
	if reply(c, Reply{}) != nil {
		return
	}
	relay.Join(c, st)
}
