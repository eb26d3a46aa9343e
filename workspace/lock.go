package workspace

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// holder is written into a held lock file so a refused command can say who
// holds the lock.
type holder struct {
	Op string `json:"op"`
	procID
}

// wsLock is a held lifecycle lock.
type wsLock struct {
	f *os.File
}

// tryLock takes the flock on path without waiting. When another process
// holds it, the error wraps ErrBusy and names the holder.
func tryLock(path, name, op string) (*wsLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, filePerm)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notFound(name)
		}
		return nil, fmt.Errorf("workspace %s: lock: %w", name, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, busyError(name, f)
		}
		return nil, fmt.Errorf("workspace %s: lock: %w", name, err)
	}
	// The folder may have been deleted (renamed away) between our open
	// and our lock: then the file we locked is no longer at path.
	var a, b syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &a) != nil || syscall.Stat(path, &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
		f.Close()
		return nil, notFound(name)
	}
	hb, _ := json.Marshal(holder{Op: op, procID: self()})
	f.Truncate(0)
	f.WriteAt(hb, 0)
	return &wsLock{f: f}, nil
}

func busyError(name string, f *os.File) error {
	b, _ := io.ReadAll(io.LimitReader(f, 4096))
	var h holder
	if json.Unmarshal(b, &h) == nil && h.Op != "" && h.alive() {
		return fmt.Errorf("workspace %s is %w (%s, pid %d): try again when it has finished", name, ErrBusy, h.Op, h.PID)
	}
	return fmt.Errorf("workspace %s is %w: try again when it has finished", name, ErrBusy)
}

// unlock clears the holder and releases the lock.
func (l *wsLock) unlock() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Truncate(0)
	l.f.Close() // closing the only descriptor releases the flock
	l.f = nil
}

func (w *wsDir) lock(op string) (*wsLock, error) {
	return tryLock(w.path(lockFile), w.name, op)
}

// lockHeld reports whether some live process holds the lock at path,
// without touching the lock itself (a probe would make a concurrent command
// see a busy lock).
func lockHeld(path string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	var h holder
	if json.Unmarshal(b, &h) != nil || h.Op == "" {
		return "", false
	}
	return h.Op, h.alive()
}
