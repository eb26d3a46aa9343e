package channel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzReadFrame feeds ReadFrameLimit arbitrary bytes, as a hostile guest
// can: it must return a frame that is exactly what was sent, or one of
// the frame errors, and never hold more than the bytes that arrived plus
// one growth step, whatever length the header claims.
//
//	go test -run '^$' -fuzz FuzzReadFrame -fuzztime 3m ./channel/
func FuzzReadFrame(f *testing.F) {
	frame := func(t FrameType, n uint32, payload []byte) []byte {
		b := []byte{byte(t), 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return append(b, payload...)
	}
	f.Add(frame(FrameHeader, 3, []byte(`{}x`)), 64, false)
	f.Add(frame(FrameStdout, 0, nil), 0, true)
	f.Add(frame(FrameHeader, MaxFrame, []byte("short")), MaxFrame, false)
	f.Add(frame(FrameHeader, MaxFrame+1, nil), MaxFrame, true)
	f.Add(frame(FrameStdout, 1<<17, bytes.Repeat([]byte{1}, 1<<17)), MaxFrame, true)
	f.Add([]byte{1, 2}, 4096, false)
	f.Fuzz(func(t *testing.T, in []byte, limit int, oneByte bool) {
		var r io.Reader = bytes.NewReader(in)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		typ, p, err := ReadFrameLimit(r, nil, limit)
		if err != nil {
			if !errors.Is(err, ErrFrameTooLarge) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(in) < 5 {
			t.Fatalf("a frame from %d bytes", len(in))
		}
		n := int(binary.BigEndian.Uint32(in[1:5]))
		if n > limit || n > MaxFrame || len(p) != n || typ != FrameType(in[0]) || !bytes.Equal(p, in[5:5+n]) {
			t.Fatalf("frame of type %d, %d bytes, from a header of type %d, %d bytes (limit %d)", typ, len(p), in[0], n, limit)
		}
		if cap(p) > 2*len(p)+growStep {
			t.Fatalf("a %d-byte frame held %d bytes", len(p), cap(p))
		}
		// And what was read writes back as the same bytes.
		var out bytes.Buffer
		if err := WriteFrame(&out, typ, p); err != nil || !bytes.Equal(out.Bytes(), in[:5+n]) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
