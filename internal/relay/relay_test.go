package relay

import (
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair is a connected pair of real TCP connections on loopback.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	for _, c := range []net.Conn{a, b} {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// client <-> (x | Join | y) <-> server: each half-close is passed on and
// the other direction goes on.
func TestJoinPassesHalfCloses(t *testing.T) {
	client, x := tcpPair(t)
	y, server := tcpPair(t)
	done := make(chan [2]int64, 1)
	go func() {
		a, b := Join(x, y)
		done <- [2]int64{a, b}
	}()
	client.Write([]byte("request"))
	client.CloseWrite()
	if b, err := io.ReadAll(server); err != nil || string(b) != "request" {
		t.Fatalf("the server read %q, %v", b, err)
	}
	server.Write([]byte("answer"))
	server.CloseWrite()
	if b, err := io.ReadAll(client); err != nil || string(b) != "answer" {
		t.Fatalf("the client read %q, %v", b, err)
	}
	if n := <-done; n != [2]int64{7, 6} {
		t.Fatalf("Join counted %v bytes, want [7 6]", n)
	}
}

// A reset on one side ends both directions: the other side's peer sees
// its connection end instead of waiting for ever.
func TestJoinFailureEndsBoth(t *testing.T) {
	client, x := tcpPair(t)
	y, server := tcpPair(t)
	done := make(chan struct{})
	go func() { Join(x, y); close(done) }()
	server.SetLinger(0)
	server.Close() // RST
	if _, err := io.ReadAll(client); err != nil {
		t.Fatalf("the client's read: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Join did not end after one side was reset")
	}
}
