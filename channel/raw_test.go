package channel

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// TestOpenRaw: the stream carries the header as its first frame, then
// whatever the caller writes, both ways.
func TestOpenRaw(t *testing.T) {
	host, guest := socketPair(t)
	served := make(chan error, 1)
	hostDone := make(chan struct{})
	defer close(hostDone)
	go func() {
		if err := GuestHandshake(guest); err != nil {
			served <- err
			return
		}
		sess, err := yamux.Server(guest, YamuxConfig())
		if err != nil {
			served <- err
			return
		}
		// Keep the session until the host has read everything: a session
		// torn down under a waiting reader may be reported before its data.
		defer func() { <-hostDone; sess.Close() }()
		st, err := sess.AcceptStream()
		if err != nil {
			served <- err
			return
		}
		var h Header
		if err := ReadJSON(st, FrameHeader, &h); err != nil || h.Op != OpExec || h.Exec.Argv[0] != "x" {
			served <- err
			return
		}
		typ, b, err := ReadFrame(st, nil)
		if err == nil && (typ != FrameStdin || string(b) != "in") {
			err = ErrFrameTooLarge // any error: the test reports the mismatch
		}
		if err == nil {
			err = WriteFrame(st, FrameStdout, []byte("out"))
		}
		st.Close()
		served <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.OpenRaw(ctx, Header{Op: OpExec, Exec: &ExecRequest{Argv: []string{"x"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := WriteFrame(st, FrameStdin, []byte("in")); err != nil {
		t.Fatal(err)
	}
	typ, b, err := ReadFrame(st, nil)
	if err != nil || typ != FrameStdout || string(b) != "out" {
		t.Fatalf("got %d %q %v", typ, b, err)
	}
	if err := <-served; err != nil {
		t.Fatalf("guest side: %v", err)
	}
	// A context that has ended opens nothing.
	cancel()
	if _, err := c.OpenRaw(ctx, Header{Op: OpHello}); err == nil {
		t.Fatal("OpenRaw with an ended context succeeded")
	}
}
