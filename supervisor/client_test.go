package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/errcode"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/wsdir"
)

// fakeWorkspace is a workspace folder whose socket is served by answer, a
// stand-in for a supervisor of another version (a real one of an older
// microagent cannot be built here).
func fakeWorkspace(t *testing.T, answer func(Request) Reply) *wsdir.Dir {
	t.Helper()
	w := wsdir.New(home.Home{Root: t.TempDir()}, "app")
	testenv.ServeUnix(t, w.SockPath(), func(c net.Conn) {
		var req Request
		if channel.ReadJSON(c, channel.FrameHeader, &req) == nil {
			channel.WriteJSON(c, channel.FrameReply, answer(req))
		}
	})
	return w
}

// TestClientOlderSupervisor: a supervisor that speaks no version (one
// started by an older microagent) is reported as such for the operations
// whose bodies changed, and can still be stopped.
func TestClientOlderSupervisor(t *testing.T) {
	w := fakeWorkspace(t, func(req Request) Reply {
		return Reply{Data: []byte(`{"state":"halted"}`)} // no Version
	})
	c := NewClient(w)
	ctx := context.Background()
	err := c.Pause(ctx)
	var refused *RemoteError
	if !errors.Is(err, ErrVersion) || !errors.As(err, &refused) || !strings.Contains(err.Error(), "workspace app is run by the supervisor of an older microagent") || !strings.Contains(err.Error(), "halt and start it") {
		t.Fatalf("pause through an older supervisor: %v", err)
	}
	if _, err := c.Exec(ctx, channel.ExecRequest{Argv: []string{"true"}}); !errors.Is(err, ErrVersion) {
		t.Fatalf("exec through an older supervisor: %v", err)
	}
	st, err := c.Halt(ctx, time.Second)
	if err != nil || st.State != wsdir.Halted {
		t.Fatalf("halt through an older supervisor: %+v %v", st, err)
	}
}

// TestClientTypedErrors: a refusal keeps its sentinels across the socket.
func TestClientTypedErrors(t *testing.T) {
	w := fakeWorkspace(t, func(req Request) Reply {
		return errorReply(errcode.With(wsdir.ErrPaused, "workspace app is paused: resume it first"))
	})
	_, err := NewClient(w).Exec(context.Background(), channel.ExecRequest{Argv: []string{"true"}})
	var refused *RemoteError
	if !errors.Is(err, wsdir.ErrPaused) || errors.Is(err, wsdir.ErrBusy) || !errors.As(err, &refused) || err.Error() != "workspace app is paused: resume it first" {
		t.Fatalf("exec on a paused workspace: %v", err)
	}
	if err := NewClient(wsdir.New(home.Home{Root: t.TempDir()}, "none")).Pause(context.Background()); !NotListening(err) {
		t.Fatalf("no supervisor: %v", err)
	}
}

// TestServerRefusesOtherVersions: the supervisor answers a client of
// another protocol version (or an unknown operation) with ErrVersion
// before touching the VM; status, halt and kill are served to every
// version (the VM-facing part of those is covered by the VM tests).
func TestServerRefusesOtherVersions(t *testing.T) {
	w := wsdir.New(home.Home{Root: t.TempDir()}, "app")
	os.MkdirAll(w.Path(wsdir.RunDir), 0o700)
	s := &supervisor{w: w}
	if err := s.listen(); err != nil {
		t.Fatal(err)
	}
	defer s.ln.Close()
	go s.accept()
	for _, req := range []Request{{Op: OpPause}, {Op: OpSnapshot, Version: ProtocolVersion + 1}, {Op: "frobnicate", Version: ProtocolVersion}} {
		conn, err := net.Dial("unix", w.SockPath())
		if err != nil {
			t.Fatal(err)
		}
		channel.WriteJSON(conn, channel.FrameHeader, req)
		var r Reply
		if err := channel.ReadJSON(conn, channel.FrameReply, &r); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if r.Version != ProtocolVersion || !errors.Is(r.Err(), ErrVersion) {
			t.Errorf("%+v: reply %+v", req, r)
		}
	}
}
