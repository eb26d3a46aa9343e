package qemu

import (
	"bytes"
	"strings"
	"sync"
)

// tailBuffer keeps the last max bytes written to it: QEMU's stderr is kept
// for error messages without letting a chatty process grow memory.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
	cut bool // bytes were discarded from the front
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

// Write implements io.Writer; it never fails.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.buf = t.buf[:0]
		t.cut = true
	} else if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// lastLines returns up to n complete trailing lines, trimmed, joined by
// newlines; a line cut at the front of the buffer is dropped.
func (t *tailBuffer) lastLines(n int) string {
	t.mu.Lock()
	b := bytes.TrimRight(t.buf, "\r\n \t")
	if t.cut {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		} else {
			b = nil
		}
	}
	s := string(b)
	t.mu.Unlock()
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
