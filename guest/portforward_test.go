//go:build linux

package guest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
)

// listen serves one TCP connection on 127.0.0.1 (the test's own loopback
// stands in for the guest's: the agent's dial is the same) with serve.
func listen(t *testing.T, serve func(*net.TCPConn)) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c.(*net.TCPConn))
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func forward(t *testing.T, c *channel.Client, port uint16) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.PortForward(ctx, port)
	if err != nil {
		t.Fatalf("port-forward to %d: %v", port, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	return conn
}

// A request and a megabyte of answer cross the agent's hop, and each
// direction's end arrives as a half-close: the server reads EOF after the
// request yet still answers, and the host reads EOF after the answer.
func TestPortForwardRoundTripHalfClose(t *testing.T) {
	c := connect(t)
	answer := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	got := make(chan string, 1)
	port := listen(t, func(s *net.TCPConn) {
		req, _ := io.ReadAll(s) // to the host's half-close
		got <- string(req)
		s.Write(answer)
		s.CloseWrite()
	})
	conn := forward(t, c, port)
	if _, err := conn.Write([]byte("GET /\n")); err != nil {
		t.Fatal(err)
	}
	conn.Close() // a yamux stream's Close is its half-close
	if req := <-got; req != "GET /\n" {
		t.Fatalf("the server read %q", req)
	}
	b, err := io.ReadAll(conn)
	if err != nil || !bytes.Equal(b, answer) {
		t.Fatalf("read %d bytes (want %d): %v", len(b), len(answer), err)
	}
}

// The server closing first ends the host's reading side while the host may
// still write, as TCP does.
func TestPortForwardServerClosesFirst(t *testing.T) {
	c := connect(t)
	got := make(chan string, 1)
	port := listen(t, func(s *net.TCPConn) {
		s.Write([]byte("hello\n"))
		s.CloseWrite()
		b, _ := io.ReadAll(s)
		got <- string(b)
	})
	conn := forward(t, c, port)
	b, err := io.ReadAll(conn)
	if err != nil || string(b) != "hello\n" {
		t.Fatalf("read %q: %v", b, err)
	}
	conn.Write([]byte("bye\n"))
	conn.Close()
	if b := <-got; b != "bye\n" {
		t.Fatalf("after its close the server read %q", b)
	}
}

// A port nothing listens on is refused with an error naming it that
// errors.Is matches across the hop, and the session goes on.
func TestPortForwardRefused(t *testing.T) {
	c := connect(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.PortForward(ctx, port)
	if !errors.Is(err, channel.ErrPortRefused) || !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(int(port))) {
		t.Fatalf("port-forward to a closed port: %v", err)
	}
	t.Logf("refused: %v", err)
	if es, out, _ := run(t, c, channel.ExecRequest{Argv: []string{"echo", "ok"}}, nil); es.Code != 0 || out != "ok\n" {
		t.Fatalf("after the refusal: %d %q", es.Code, out)
	}
}

// A session that ends (the VM's channel lost) closes the guest's TCP
// connection: the server reads EOF rather than waiting for ever.
func TestPortForwardSessionEnds(t *testing.T) {
	c := connect(t)
	ended := make(chan error, 1)
	port := listen(t, func(s *net.TCPConn) {
		s.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.ReadAll(s)
		ended <- err
	})
	forward(t, c, port)
	c.Close()
	if err := <-ended; err != nil {
		t.Fatalf("the server's connection did not end cleanly: %v", err)
	}
}
