// Package hostileguest is what a guest's root can do to the host through
// the agent's channel, for the tests that check the host's bounds: it
// writes raw yamux frames that no well-behaved agent would. Both the
// in-process tests (over a socket pair) and the in-guest test program
// (testdata/hostile, on the agent's own port descriptor) use it, so the
// attack tested without a VM is the attack run in one.
package hostileguest

import (
	"encoding/binary"
	"io"

	"github.com/microagent-dev/microagent/channel"
)

// yamux wire constants (github.com/hashicorp/yamux const.go): a 12-byte
// header of version, type, flags, stream id and length.
const (
	typeData = 0
	flagSYN  = 1
	// Window is yamux's initial stream window: the most one frame may
	// carry on a new stream.
	Window = 256 << 10
)

func yamuxHeader(typ byte, flags uint16, id, length uint32) []byte {
	h := make([]byte, 12)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], id)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// OpenStream writes one frame that opens stream id (even: guest-opened)
// and carries a channel header frame announcing channel.MaxFrame bytes
// followed by body bytes of it (at most Window-5), never the rest: the
// host must not allocate or wait for what was only announced.
func OpenStream(w io.Writer, id uint32, body int) error {
	body = min(body, Window-5)
	b := yamuxHeader(typeData, flagSYN, id, uint32(5+body))
	var fh [5]byte
	fh[0] = byte(channel.FrameHeader)
	binary.BigEndian.PutUint32(fh[1:], channel.MaxFrame)
	b = append(b, fh[:]...)
	b = append(b, make([]byte, body)...)
	_, err := w.Write(b)
	return err
}

// Flood opens n streams from firstID on (ids step by 2, as yamux's
// server side numbers them), each announcing a megabyte and sending body
// bytes of it. It returns the bytes written.
func Flood(w io.Writer, firstID uint32, n, body int) (int64, error) {
	var sent int64
	for i := range n {
		if err := OpenStream(w, firstID+2*uint32(i), body); err != nil {
			return sent, err
		}
		sent += int64(12 + 5 + min(body, Window-5))
	}
	return sent, nil
}

// ReuseID opens stream id twice, a protocol error that ends the host's
// session: what the host must then do is notice and say so.
func ReuseID(w io.Writer, id uint32) error {
	for range 2 {
		if err := OpenStream(w, id, 0); err != nil {
			return err
		}
	}
	return nil
}
