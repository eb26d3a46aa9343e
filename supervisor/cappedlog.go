package supervisor

import (
	"fmt"
	"os"
)

// cappedLog writes to a file until the file holds a bound's worth of
// bytes, then drops the rest with one line saying so. Writes never fail:
// a full log or a failing disk only drop output, never the process that
// writes it.
type cappedLog struct {
	f    *os.File
	left int64
	full bool
}

// newCappedLog bounds f (opened for append) to max bytes, what it holds
// already included.
func newCappedLog(f *os.File, max int64) *cappedLog {
	c := &cappedLog{f: f, left: max}
	if fi, err := f.Stat(); err == nil {
		c.left -= fi.Size()
	}
	return c
}

// Write writes what fits and reports all of b written.
func (c *cappedLog) Write(b []byte) (int, error) {
	if c.left <= 0 {
		if !c.full {
			c.full = true
			_, _ = fmt.Fprintf(c.f, "\n[microagent: log limit reached, further output dropped]\n")
		}
		return len(b), nil
	}
	n := min(int64(len(b)), c.left)
	_, _ = c.f.Write(b[:n])
	c.left -= n
	return len(b), nil
}
