package supervisor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/wsdir"
)

// stoppedMachine is a VMM that has exited: the fuzzed supervisor answers
// every request from its final record, never reaching a guest.
type stoppedMachine struct{}

func (stoppedMachine) PID() int { return 0 }
func (stoppedMachine) Done() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
func (stoppedMachine) Wait() error                                 { return nil }
func (stoppedMachine) Shutdown(context.Context) error              { return nil }
func (stoppedMachine) Kill() error                                 { return nil }
func (stoppedMachine) DialAgent(context.Context) (net.Conn, error) { return nil, os.ErrClosed }

// FuzzServerRequest: whatever bytes a client sends to the supervisor's
// socket, it answers with at most one well-formed Reply and closes the
// connection; it never panics, never hangs, and never allocates by a
// length the client chose (ReadJSON's frame limit).
func FuzzServerRequest(f *testing.F) {
	for _, req := range []Request{
		{Version: ProtocolVersion, Op: OpStatus},
		{Version: ProtocolVersion, Op: OpExec, Exec: &channel.ExecRequest{Argv: []string{"true"}}},
		{Version: ProtocolVersion, Op: OpHalt, Timeout: time.Second},
		{Version: ProtocolVersion, Op: OpSnapshot, Tag: "../x"},
		{Version: ProtocolVersion, Op: OpCopyOut},
		{Op: OpPause},
		{Version: 99, Op: "nope"},
	} {
		var b bytes.Buffer
		channel.WriteJSON(&b, channel.FrameHeader, req)
		f.Add(b.Bytes())
	}
	f.Add([]byte{byte(channel.FrameHeader), 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})

	w := wsdir.New(home.Home{Root: f.TempDir()}, "fz")
	os.MkdirAll(w.Path(wsdir.RunDir), 0o700)
	done := make(chan struct{})
	close(done)
	s := &supervisor{
		w: w, vm: &microvm.VM{Machine: stoppedMachine{}}, phase: wsdir.Halted,
		reqs: make(chan stopReq), finished: done, finishedSet: true,
		final: &wsdir.Record{State: wsdir.Halted},
	}
	if err := s.listen(); err != nil {
		f.Fatal(err)
	}
	defer s.ln.Close()
	go s.accept()

	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: w.SockPath(), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(in)
		c.CloseWrite()
		out, err := io.ReadAll(c)
		if errors.Is(err, syscall.ECONNRESET) {
			return // closed with the client's bytes unread: refused
		}
		if err != nil {
			t.Fatalf("the supervisor did not close the connection: %v", err)
		}
		if len(out) == 0 {
			return // refused silently: not a frame it could read
		}
		var r Reply
		if err := channel.ReadJSON(bytes.NewReader(out), channel.FrameReply, &r); err != nil {
			t.Fatalf("reply %q: %v", out, err)
		}
		if r.Version != ProtocolVersion {
			t.Fatalf("reply without the protocol version: %+v", r)
		}
	})
}
