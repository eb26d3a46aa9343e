package wsdir

import (
	"errors"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// An unlocked lock is free at once even while a copy of its descriptor
// lives on, as in a child forked and not yet exec'd; a held one is refused
// with ErrBusy.
func TestUnlockReleasesCopies(t *testing.T) {
	path := filepath.Join(t.TempDir(), LockFile)
	l, err := TryLock(path, "app", "start")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryLock(path, "app", "halt"); !errors.Is(err, ErrBusy) {
		t.Fatalf("TryLock of a held lock = %v, want ErrBusy", err)
	}
	dup, err := unix.Dup(int(l.f.Fd())) // the forked child's copy
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dup)
	l.Unlock()
	l2, err := TryLock(path, "app", "halt")
	if err != nil {
		t.Fatalf("TryLock after Unlock, a copy of the descriptor still open: %v", err)
	}
	l2.Unlock()
}
