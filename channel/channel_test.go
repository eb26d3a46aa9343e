package channel

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFrame(&b, FrameStdout, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(&b, FrameExit, ExitStatus{Code: 3, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	typ, p, err := ReadFrame(&b, nil)
	if err != nil || typ != FrameStdout || string(p) != "abc" {
		t.Fatalf("got %d %q %v", typ, p, err)
	}
	var es ExitStatus
	if err := ReadJSON(&b, FrameExit, &es); err != nil || es.Code != 3 || es.Signal != 9 {
		t.Fatalf("got %+v %v", es, err)
	}
	if _, _, err := ReadFrame(&b, nil); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
}

func TestFrameLimits(t *testing.T) {
	if err := WriteFrame(io.Discard, FrameStdin, make([]byte, MaxFrame+1)); err == nil {
		t.Fatal("oversized write accepted")
	}
	// A corrupt length must not make the reader allocate it.
	r := bytes.NewReader([]byte{byte(FrameStdout), 0xff, 0xff, 0xff, 0xff})
	if _, _, err := ReadFrame(r, nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("want ErrFrameTooLarge, got %v", err)
	}
	// A truncated payload is an unexpected EOF, not a short frame.
	r = bytes.NewReader([]byte{byte(FrameStdout), 0, 0, 0, 5, 'a'})
	if _, _, err := ReadFrame(r, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("want ErrUnexpectedEOF, got %v", err)
	}
	if err := ReadJSON(bytes.NewReader([]byte{byte(FrameReply), 0, 0, 0, 0}), FrameExit, &Reply{}); err == nil {
		t.Fatal("wrong frame type accepted")
	}
}

// The handshake must find the greeting behind stale bytes from an earlier
// session, on both sides.
func TestHandshakeSkipsStaleBytes(t *testing.T) {
	host, guest := socketPair(t)
	defer host.Close()
	defer guest.Close()
	errc := make(chan error, 1)
	go func() {
		// Stale output of an old session reaches the host first.
		if _, err := guest.Write([]byte("\x01\x02stale" + strings.Repeat("x", 300) + "\nMICROAGENT/1 oldnonce OK\n")); err != nil {
			errc <- err
			return
		}
		errc <- GuestHandshake(guest)
	}()
	if err := HostHandshake(host, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestHandshakeVersionMismatch(t *testing.T) {
	host, guest := socketPair(t)
	defer host.Close()
	go func() { io.WriteString(host, "MICROAGENT/99 n\n") }()
	if err := GuestHandshake(guest); !errors.Is(err, ErrVersion) {
		t.Fatalf("want ErrVersion, got %v", err)
	}
}

// socketPair returns two connected, buffered stream sockets, like the
// virtio-serial port and its host socket (net.Pipe is unbuffered).
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// TestResyncHandshake plays a restored guest: its old session eats the
// first greeting's start (a yamux header's worth), fails, and returns to the
// handshake; a session whose first line is not the host's payload is also
// broken and starts over. The host must end with a clean session.
func TestResyncHandshake(t *testing.T) {
	host, guest := socketPair(t)
	defer host.Close()
	defer guest.Close()
	errc := make(chan error, 1)
	go func() {
		var hdr [12]byte
		if _, err := io.ReadFull(guest, hdr[:]); err != nil {
			errc <- err
			return
		}
		for range 20 {
			if err := GuestHandshake(guest); err != nil {
				errc <- err
				return
			}
			line, err := readLine(guest)
			if err != nil {
				errc <- err
				return
			}
			if line == "PAYLOAD" {
				errc <- nil
				return
			}
		}
		errc <- errors.New("no clean session after 20 handshakes")
	}()
	if err := ResyncHandshake(host, "n1", 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	io.WriteString(host, "PAYLOAD\n")
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("guest never saw the payload as the first line of a session")
	}
}

func TestNewMachineIDIsValidAndFresh(t *testing.T) {
	a, b := NewMachineID(), NewMachineID()
	r := ResumedRequest{UnixNano: 1, Entropy: make([]byte, ResumedEntropy), MachineID: a}
	if err := r.Validate(); err != nil || a == b {
		t.Fatalf("%q %q: %v", a, b, err)
	}
}
