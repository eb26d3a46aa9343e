package wsdir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

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

// lockSettle bounds how long TryLock waits out a lock held with no live
// holder recorded. That is a passing state: a holder between its flock and
// writing its record, or a lock already released whose descriptor a child
// of the releasing process still has, forked (by any goroutine, for any
// command) and not yet exec'd, which closes it. One process starting many
// workspaces at once (a Kubernetes node) meets the second often.
const lockSettle = 2 * time.Second

// TryLock takes the flock on path without waiting for another command: when
// a live process holds it, the error wraps ErrBusy and names the holder. A
// lock held with no live holder recorded is retried for up to lockSettle
// first.
func TryLock(path, name, op string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, FilePerm)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, NotFound(name)
		}
		return nil, &Error{Name: name, Op: "lock", Err: err}
	}
	for deadline := time.Now().Add(lockSettle); ; time.Sleep(10 * time.Millisecond) {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, &Error{Name: name, Op: "lock", Err: err}
		}
		if h := readHolder(f); h.Op != "" && h.Alive() || time.Now().After(deadline) {
			defer f.Close()
			return nil, busyError(name, h)
		}
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

// readHolder reads a held lock's record (empty when there is none).
func readHolder(f *os.File) holder {
	b, _ := io.ReadAll(io.NewSectionReader(f, 0, 4096))
	var h holder
	if json.Unmarshal(b, &h) != nil {
		return holder{}
	}
	return h
}

func busyError(name string, h holder) error {
	if h.Op != "" && h.Alive() {
		return fmt.Errorf("workspace %s is %w (%s, pid %d): try again when it has finished", name, ErrBusy, h.Op, h.PID)
	}
	return fmt.Errorf("workspace %s is %w: try again when it has finished", name, ErrBusy)
}

// Unlock clears the holder and releases the lock; a nil or released lock
// is left alone.
func (l *Lock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Truncate(0)
	l.f.Close() // closing the only descriptor releases the flock
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
