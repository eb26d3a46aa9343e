package channel_test

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/microagent-dev/microagent/channel"
)

// The guest's answer to a port-forward, as a guest's root could write it
// in place of the agent's (a real agent cannot be made to): a fake guest
// session reads the header and answers; the host must fail with an error
// saying what was wrong, within its bounds of size and time.
func TestHostilePortForwardAnswers(t *testing.T) {
	defer channel.SetPortForwardTimeout(500 * time.Millisecond)()
	frame := func(typ channel.FrameType, length uint32, body []byte) []byte {
		b := make([]byte, 5, 5+len(body))
		b[0] = byte(typ)
		binary.BigEndian.PutUint32(b[1:], length)
		return append(b, body...)
	}
	for _, tc := range []struct {
		name   string
		answer func(*yamux.Stream)
		want   string
	}{
		{"garbage", func(st *yamux.Stream) { st.Write([]byte("HTTP/1.1 200 OK\r\n\r\n")) }, "longer than the 4096 bytes"},
		// A megabyte announced, a window's worth sent: refused from the
		// length alone, nothing read or allocated for it.
		{"oversized", func(st *yamux.Stream) { st.Write(frame(channel.FrameReply, channel.MaxFrame, make([]byte, 200<<10))) }, "longer than the 4096 bytes"},
		{"not JSON", func(st *yamux.Stream) { st.Write(frame(channel.FrameReply, 5, []byte("\x00\xffxyz"))) }, "not a reply"},
		{"wrong frame", func(st *yamux.Stream) { st.Write(frame(channel.FrameStdout, 2, []byte("hi"))) }, "frame of type 7, not a reply"},
		{"cut short", func(st *yamux.Stream) { st.Write(frame(channel.FrameReply, 100, []byte(`{"error":`))) }, "cut short"},
		{"silent", func(st *yamux.Stream) { time.Sleep(5 * time.Second) }, "did not answer within 500ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, gsess, _ := hostileSession(t)
			go func() {
				st, err := gsess.AcceptStream()
				if err != nil {
					return
				}
				defer st.Close()
				var h channel.Header
				if channel.ReadJSON(st, channel.FrameHeader, &h) != nil || h.Op != channel.OpPortForward || h.PortForward == nil || h.PortForward.Port != 8080 {
					channel.WriteJSON(st, channel.FrameReply, channel.Reply{Error: "the test's guest got another request"})
					return
				}
				tc.answer(st)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			t0 := time.Now()
			conn, err := c.PortForward(ctx, 8080)
			took := time.Since(t0)
			if err == nil {
				conn.Close()
				t.Fatal("the host took the answer as a connection")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "port 8080") {
				t.Fatalf("error %q does not say %q about port 8080", err, tc.want)
			}
			if took > 3*time.Second {
				t.Fatalf("the host took %v to give up", took)
			}
			t.Logf("%v: %v", took.Round(time.Millisecond), err)
		})
	}
}

// A caller's context ending while the guest has not answered ends the
// wait at once with the context's error.
func TestHostilePortForwardCanceled(t *testing.T) {
	c, gsess, _ := hostileSession(t)
	go func() {
		if st, err := gsess.AcceptStream(); err == nil {
			defer st.Close()
			time.Sleep(5 * time.Second)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := c.PortForward(ctx, 8080)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 2*time.Second {
		t.Fatalf("after %v: %v", time.Since(t0), err)
	}
}
