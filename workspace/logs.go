package workspace

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/wsdir"
)

// LogsOptions say which logs to print.
type LogsOptions struct {
	Name string
	// Follow keeps printing what is appended until the workspace stops
	// (or ctx ends).
	Follow bool
	// Console selects the guest's serial console of the current (or
	// last) boot; Supervisor the supervisor's log of boots, halts and
	// failures. Neither selects both (supervisor log first).
	Console, Supervisor bool
	// Egress selects the user network's decision log instead (JSON lines,
	// usernet.Event; see EgressLogName), and only it.
	Egress bool
}

// followInterval is how often a followed log is checked for new data.
const followInterval = 200 * time.Millisecond

// LogSource names one of a workspace's logs.
type LogSource string

// The logs of a workspace.
const (
	SupervisorLog LogSource = "supervisor"
	ConsoleLog    LogSource = "console"
	EgressLog     LogSource = "egress"
)

// Logs copies a workspace's logs to out.
func Logs(ctx context.Context, h home.Home, o LogsOptions, out io.Writer) error {
	return LogsFunc(ctx, h, o, func(_ LogSource, b []byte) error {
		_, err := out.Write(b)
		return err
	})
}

// LogsFunc is Logs handing each piece of log to fn with the log it came
// from (for callers that keep the logs apart, such as JSON output).
func LogsFunc(ctx context.Context, h home.Home, o LogsOptions, fn func(LogSource, []byte) error) error {
	w, err := open(h, o.Name)
	if err != nil {
		return err
	}
	if !o.Console && !o.Supervisor && !o.Egress {
		o.Console, o.Supervisor = true, true
	}
	var tails []*tail
	if o.Egress {
		// A rotation replaces the file, which tail follows.
		o.Console, o.Supervisor = false, false
		tails = append(tails, &tail{path: w.Path(wsdir.LogsDir, EgressLogName), src: EgressLog})
	}
	if o.Supervisor {
		tails = append(tails, &tail{path: w.SupLog(), src: SupervisorLog})
	}
	if o.Console {
		tails = append(tails, &tail{path: w.ConsoleLog(), src: ConsoleLog})
	}
	defer func() {
		for _, t := range tails {
			t.close()
		}
	}()
	for {
		// Read the state before draining, so nothing written before the
		// workspace stopped is missed.
		live := false
		if o.Follow {
			if obs, err := w.observe(); err == nil {
				live = obs.state.Live()
			}
		}
		for _, t := range tails {
			if err := t.drain(fn); err != nil {
				return err
			}
		}
		if !live {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followInterval):
		}
	}
}

// tail reads a log file from where it left off, reopening it when it is
// replaced (each boot starts a new console log).
type tail struct {
	path string
	src  LogSource
	f    *os.File
	ino  uint64
	off  int64
}

func (t *tail) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

func (t *tail) drain(fn func(LogSource, []byte) error) error {
	var st syscall.Stat_t
	if err := syscall.Stat(t.path, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if t.f != nil && st.Ino != t.ino {
		// Replaced: finish the old file, then start on the new one.
		if err := t.copy(fn); err != nil {
			return err
		}
		t.close()
	}
	if t.f == nil {
		f, err := os.Open(t.path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		t.f, t.ino, t.off = f, st.Ino, 0
	}
	if st.Size < t.off { // truncated
		t.f.Seek(0, io.SeekStart)
		t.off = 0
	}
	return t.copy(fn)
}

// copy hands what was appended since the last call to fn.
func (t *tail) copy(fn func(LogSource, []byte) error) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := t.f.Read(buf)
		if n > 0 {
			t.off += int64(n)
			if ferr := fn(t.src, buf[:n]); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
