package channel

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/tarcopy"
)

// TestCopyFraming runs both copy directions against a fake guest on a pipe.
func TestCopyFraming(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 50000) // 800 KB: several frames
	host, guest := net.Pipe()
	go func() {
		b, err := io.ReadAll(NewDataReader(guest))
		rep := Reply{}
		if err != nil || !bytes.Equal(b, data) {
			rep.Error = "got other bytes"
		} else {
			rep.Data, _ = json.Marshal(tarcopy.Stats{Files: 1, Bytes: int64(len(b))})
		}
		WriteJSON(guest, FrameReply, rep)
	}()
	st, err := SendArchive(host, bytes.NewReader(data))
	if err != nil || st.Bytes != int64(len(data)) {
		t.Fatalf("send: %+v %v", st, err)
	}

	go func() {
		NewDataWriter(guest, FrameStdout).Write(data)
		WriteJSON(guest, FrameReply, Reply{Error: "disk full"})
	}()
	var out bytes.Buffer
	_, err = ReceiveArchive(host, &out)
	if !IsGuestCopyError(err) || !strings.Contains(err.Error(), "disk full") || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("receive: %v (%d bytes)", err, out.Len())
	}
	host.Close()
	guest.Close()
}

// TestCopyEarlyRefusalAndLostGuest: a guest that refuses before reading
// the archive is heard at once; a guest that goes away is a lost stream,
// and a guest reader sees a host that went away as an unexpected EOF.
func TestCopyEarlyRefusalAndLostGuest(t *testing.T) {
	host, guest := net.Pipe()
	go func() {
		WriteJSON(guest, FrameReply, Reply{Error: "the parent directory /x does not exist"})
		guest.Close()
	}()
	endless := io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), strings.NewReader(""))
	_, err := SendArchive(host, endless)
	if !IsGuestCopyError(err) {
		t.Fatalf("early refusal: %v", err)
	}
	host.Close()

	h2, g2 := net.Pipe()
	go g2.Close()
	if _, err := ReceiveArchive(h2, io.Discard); err == nil || IsGuestCopyError(err) || !strings.Contains(err.Error(), "lost") {
		t.Fatalf("lost guest: %v", err)
	}

	h3, g3 := net.Pipe()
	go func() {
		WriteFrame(h3, FrameStdin, []byte("partial"))
		h3.Close()
	}()
	_, err = io.ReadAll(NewDataReader(g3))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("host gone: %v", err)
	}
}

// TestCopyRefusalWhileSending: over a buffered socket the host's write
// may fail before it has read the guest's refusal; the refusal must still
// be what the caller gets.
func TestCopyRefusalWhileSending(t *testing.T) {
	for i := 0; i < 20; i++ {
		host, guest := socketPair(t)
		go func() {
			ReadFrame(guest, nil)
			WriteJSON(guest, FrameReply, Reply{Error: "refused"})
			guest.Close()
		}()
		_, err := SendArchive(host, bytes.NewReader(make([]byte, 10<<20)))
		host.Close()
		if !IsGuestCopyError(err) {
			t.Fatalf("round %d: got %v, want the guest's refusal", i, err)
		}
	}
}
