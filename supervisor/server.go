package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

func (s *supervisor) accept() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		go s.handle(c)
	}
}

// reply writes r (with this side's version) as the connection's reply.
func reply(c net.Conn, r Reply) error {
	r.Version = ProtocolVersion
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	defer c.SetWriteDeadline(time.Time{})
	return channel.WriteJSON(c, channel.FrameReply, r)
}

// handlers serve the operations; each owns (and closes) the connection.
var handlers = map[Op]func(*supervisor, net.Conn, Request){
	OpStatus:      (*supervisor).status,
	OpExec:        (*supervisor).exec,
	OpHalt:        (*supervisor).stop,
	OpKill:        (*supervisor).stop,
	OpPause:       (*supervisor).control,
	OpResume:      (*supervisor).control,
	OpSnapshot:    (*supervisor).control,
	OpCopyIn:      (*supervisor).relay,
	OpCopyOut:     (*supervisor).relay,
	OpEgress:      (*supervisor).egress,
	OpJobStart:    (*supervisor).jobStart,
	OpJobWait:     (*supervisor).jobWait,
	OpPortForward: (*supervisor).portForward,
}

func (s *supervisor) handle(c *net.UnixConn) {
	// Only our own user may drive the workspace (the socket is 0600 in a
	// 0700 folder; this checks again).
	if !sameUser(c) {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req Request
	if err := channel.ReadJSON(c, channel.FrameHeader, &req); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	h, ok := handlers[req.Op]
	switch {
	case !ok:
		reply(c, errorReply(fmt.Errorf("%w: unknown operation %q", ErrVersion, req.Op)))
		c.Close()
	case req.Version != ProtocolVersion && !req.Op.stable():
		reply(c, errorReply(fmt.Errorf("%w: the client speaks protocol %d, this supervisor %d: halt and start the workspace with one microagent", ErrVersion, req.Version, ProtocolVersion)))
		c.Close()
	default:
		h(s, c, req)
	}
}

func (s *supervisor) status(c net.Conn, _ Request) {
	defer c.Close()
	s.mu.Lock()
	st := Status{State: s.phase, Reason: s.lost, Execs: s.execs, Forwards: s.forwards, VMMPID: s.vm.Machine.PID()}
	s.mu.Unlock()
	b, _ := json.Marshal(st)
	reply(c, Reply{Data: b})
}

// control serves pause, resume and snapshot: one reply each.
func (s *supervisor) control(c net.Conn, req Request) {
	defer c.Close()
	data, err := s.handleControl(req)
	r := Reply{Data: data}
	if err != nil {
		r = errorReply(err)
	}
	reply(c, r)
}

// egress puts a new egress policy in force in the running network; the
// caller has recorded it in the manifest, which later boots read.
func (s *supervisor) egress(c net.Conn, req Request) {
	defer c.Close()
	err := s.updateEgress(req.Network)
	if err != nil {
		s.log.Printf("egress policy change failed: %v", err)
		reply(c, errorReply(err))
		return
	}
	s.log.Printf("egress policy changed")
	reply(c, Reply{})
}

// egressTimeout bounds a policy change in the running network.
const egressTimeout = 10 * time.Second

func (s *supervisor) updateEgress(n *wsdir.NetworkConfig) error {
	if n == nil {
		return errors.New("egress: no network in the request")
	}
	s.mu.Lock()
	phase := s.phase
	s.mu.Unlock()
	if phase != wsdir.Running && phase != wsdir.Paused {
		return fmt.Errorf("workspace %s is %s", s.w.Name, phase)
	}
	u, ok := s.vm.Machine.(vmm.EgressUpdater)
	if !ok {
		return vmm.ErrEgressFixed
	}
	ctx, cancel := context.WithTimeout(context.Background(), egressTimeout)
	defer cancel()
	return u.UpdateEgress(ctx, n.VMM())
}

func (s *supervisor) stop(c net.Conn, req Request) {
	defer c.Close()
	if req.Timeout <= 0 {
		req.Timeout = DefaultHaltTimeout
	}
	rc := make(chan *wsdir.Record, 1)
	s.mu.Lock()
	final, over := s.final, s.finishedSet
	if !over {
		s.replies.Add(1)
		defer s.replies.Done()
	}
	s.mu.Unlock()
	if !over {
		select {
		case s.reqs <- stopReq{op: req.Op, timeout: req.Timeout, reply: rc}:
			final = <-rc
		case <-s.finished:
			s.mu.Lock()
			final = s.final
			s.mu.Unlock()
		}
	}
	var data []byte
	if final != nil {
		data, _ = json.Marshal(Status{State: final.State, Reason: final.Reason})
	}
	reply(c, Reply{Data: data})
}

func (s *supervisor) listen() error {
	p := s.w.SockPath()
	os.Remove(p)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return &wsdir.Error{Name: s.w.Name, Op: "supervisor socket", Err: err}
	}
	if err := os.Chmod(p, wsdir.FilePerm); err != nil {
		ln.Close()
		return &wsdir.Error{Name: s.w.Name, Op: "supervisor socket", Err: err}
	}
	s.ln = ln
	return nil
}
