package k8snode

import (
	"bytes"
	"context"
	"io"
	"os"
	"time"

	"github.com/microagent-dev/microagent/supervisor"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// DefaultMaxLog bounds a pod's log on the host: output past it is dropped,
// with one line saying so, since the guest decides how much it prints.
const DefaultMaxLog = supervisor.DefaultJobLog

// followPoll is how often a followed log is checked for more output.
const followPoll = 200 * time.Millisecond

// openLog returns the log at path per opts: its last Tail lines, at most
// LimitBytes, and with Follow more as it is written until finished reports
// true (or done closes) and the rest is read, or ctx ends.
func openLog(ctx context.Context, path string, opts api.ContainerLogOpts, done <-chan struct{}, finished func() bool) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	if err != nil {
		return nil, err
	}
	if opts.Tail > 0 {
		if err := seekTail(f, opts.Tail); err != nil {
			f.Close()
			return nil, err
		}
	}
	var r io.Reader = f
	if opts.Follow {
		r = &follower{ctx: ctx, f: f, done: done, finished: finished}
	}
	if opts.LimitBytes > 0 {
		r = io.LimitReader(r, int64(opts.LimitBytes))
	}
	return struct {
		io.Reader
		io.Closer
	}{r, f}, nil
}

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	end := fi.Size()
	buf := make([]byte, 32<<10)
	lines := 0
	pos := end
	for pos > 0 {
		step := int64(len(buf))
		if step > pos {
			step = pos
		}
		pos -= step
		if _, err := f.ReadAt(buf[:step], pos); err != nil {
			return err
		}
		for i := step - 1; i >= 0; i-- {
			// A final newline ends the last line rather than starting one.
			if buf[i] == '\n' && pos+i != end-1 {
				lines++
				if lines == n {
					_, err := f.Seek(pos+i+1, io.SeekStart)
					return err
				}
			}
		}
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

// follower reads a growing file until the writer is finished.
type follower struct {
	ctx      context.Context
	f        *os.File
	done     <-chan struct{}
	finished func() bool
}

func (fl *follower) Read(b []byte) (int, error) {
	for {
		n, err := fl.f.Read(b)
		if n > 0 || (err != nil && err != io.EOF) {
			return n, err
		}
		over := fl.finished()
		select {
		case <-fl.done:
			over = true
		default:
		}
		if over {
			// One last read: the writer may have added a tail after
			// the read above.
			if n, err := fl.f.Read(b); n > 0 {
				return n, err
			}
			return 0, io.EOF
		}
		select {
		case <-fl.ctx.Done():
			return 0, fl.ctx.Err()
		case <-time.After(followPoll):
		}
	}
}
