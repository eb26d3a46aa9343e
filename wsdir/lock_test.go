package wsdir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A lock held with no holder recorded (a released lock whose descriptor a
// forked, not yet exec'd child still has) is waited for; one a live
// command holds is refused at once, naming it; one held unrecorded for
// good is refused after lockSettle.
func TestTryLockSettles(t *testing.T) {
	path := filepath.Join(t.TempDir(), LockFile)
	other := func() *os.File {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, FilePerm)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Fatal(err)
		}
		return f
	}
	released := other()
	go func() {
		time.Sleep(200 * time.Millisecond)
		released.Close()
	}()
	l, err := TryLock(path, "app", "start")
	if err != nil {
		t.Fatalf("TryLock while an unrecorded holder lets go: %v", err)
	}
	t0 := time.Now()
	if _, err := TryLock(path, "app", "halt"); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "(start, pid ") {
		t.Errorf("TryLock of a held lock = %v, want ErrBusy naming start", err)
	}
	if d := time.Since(t0); d > lockSettle/2 {
		t.Errorf("refusing a live holder took %v", d)
	}
	l.Unlock()

	held := other()
	defer held.Close()
	t0 = time.Now()
	if _, err := TryLock(path, "app", "start"); !errors.Is(err, ErrBusy) {
		t.Errorf("TryLock of a lock held unrecorded = %v, want ErrBusy", err)
	}
	if d := time.Since(t0); d < lockSettle {
		t.Errorf("gave up after %v, want %v", d, lockSettle)
	}
}
