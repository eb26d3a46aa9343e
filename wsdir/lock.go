package wsdir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/proc"
)

// holder is written into a held lock file so a refused command can say who
// holds the lock.
type holder struct {
	Op string `json:"op"`
	proc.ID
}

// Lock is a held lifecycle lock.
type Lock struct {
	f *os.File
}

// TryLock takes the flock on path without waiting. When another process
// holds it, the error wraps ErrBusy and names the holder.
func TryLock(path, name, op string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, FilePerm)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, NotFound(name)
		}
		return nil, &Error{Name: name, Op: "lock", Err: err}
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, busyError(name, f)
		}
		return nil, &Error{Name: name, Op: "lock", Err: err}
	}
	// The folder may have been deleted (renamed away) between our open
	// and our lock: then the file we locked is no longer at path.
	var a, b syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &a) != nil || syscall.Stat(path, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
		f.Close()
		return nil, NotFound(name)
	}
	hb, _ := json.Marshal(holder{Op: op, ID: proc.Self()})
	f.Truncate(0)
	f.WriteAt(hb, 0)
	return &Lock{f: f}, nil
}

func busyError(name string, f *os.File) error {
	b, _ := io.ReadAll(io.LimitReader(f, 4096))
	var h holder
	if json.Unmarshal(b, &h) == nil && h.Op != "" && h.Alive() {
		return fmt.Errorf("workspace %s is %w (%s, pid %d): try again when it has finished", name, ErrBusy, h.Op, h.PID)
	}
	return fmt.Errorf("workspace %s is %w: try again when it has finished", name, ErrBusy)
}

// Unlock clears the holder and releases the lock; a nil or released lock
// is left alone. The lock is released explicitly, not by closing: a child
// this process forked (for any command, from any goroutine) and that has
// not yet exec'd holds a copy of the descriptor, which would keep the lock
// held until its exec; a process starting many workspaces at once (a
// Kubernetes node) had its next command on this workspace refused as busy.
func (l *Lock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Truncate(0)
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
	l.f = nil
}

// Lock takes the workspace's lifecycle lock for op (see TryLock).
func (w *Dir) Lock(op string) (*Lock, error) {
	return TryLock(w.Path(LockFile), w.Name, op)
}

// LockHeld reports whether some live process holds the lock at path, and
// for what, without touching the lock itself (a probe would make a
// concurrent command see a busy lock).
func LockHeld(path string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	var h holder
	if json.Unmarshal(b, &h) != nil || h.Op == "" {
		return "", false
	}
	return h.Op, h.Alive()
}
