package secrets

import (
	"errors"
	"io"
)

// errTooBig is readBounded's signal that the input exceeds the limit.
var errTooBig = errors.New("input exceeds limit")

// readBounded reads r to EOF into a buffer of at most limit bytes. Unlike
// io.ReadAll, every buffer it outgrows is zeroed before being dropped, so no
// partial copy of a secret is left for the garbage collector. On error the
// buffer is zeroed and nil is returned.
func readBounded(r io.Reader, sizeHint, limit int) ([]byte, error) {
	size := 512
	if sizeHint > 0 {
		size = sizeHint + 1 // +1 so that EOF is seen without a grow
	}
	size = min(size, limit+1)
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if len(buf) > limit {
				clear(buf)
				return nil, errTooBig
			}
			bigger := make([]byte, len(buf), min(2*cap(buf)+512, limit+1))
			copy(bigger, buf)
			clear(buf)
			buf = bigger
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			clear(buf)
			return nil, errTooBig
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			clear(buf)
			return nil, err
		}
	}
}
