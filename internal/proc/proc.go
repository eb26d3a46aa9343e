// Package proc identifies processes across PID reuse and crashes: a process is
// named by its PID, its start time and the host boot, never by a bare PID, and
// handled through a pidfd so a signal never reaches a newer process that
// reused the PID. Workspaces record their supervisor and VMM as IDs.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ID identifies a process across PID reuse: its PID, its start time in
// clock ticks since boot (field 22 of /proc/PID/stat) and the host's boot.
type ID struct {
	PID    int    `json:"pid"`
	Start  uint64 `json:"start"`
	BootID string `json:"bootId"`
}

var (
	bootOnce sync.Once
	bootID   string
)

// HostBootID is the kernel's random boot id: start times are only
// comparable within one boot.
func HostBootID() string {
	bootOnce.Do(func() {
		b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		bootID = strings.TrimSpace(string(b))
	})
	return bootID
}

// procStat returns a process's state letter and start time.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start behind the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return f[0][0], start, nil
}

// Identify returns the identity of a live process.
func Identify(pid int) (ID, error) {
	st, start, err := procStat(pid)
	if err != nil {
		return ID{}, err
	}
	if st == 'Z' || st == 'X' {
		return ID{}, fmt.Errorf("process %d has exited", pid)
	}
	return ID{PID: pid, Start: start, BootID: HostBootID()}, nil
}

// Self is the calling process.
func Self() ID {
	id, err := Identify(os.Getpid())
	if err != nil {
		return ID{PID: os.Getpid(), BootID: HostBootID()}
	}
	return id
}

// Alive reports whether the process p names still runs (a zombie has
// exited).
func (p *ID) Alive() bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	if p.BootID != HostBootID() {
		return false
	}
	st, start, err := procStat(p.PID)
	return err == nil && start == p.Start && st != 'Z' && st != 'X'
}

// Proc is a handle on a live process: a pidfd, which keeps naming the same
// process even if its PID is reused.
type Proc struct {
	id ID
	fd int
}

// ErrGone is returned by Open for a process that no longer runs.
var ErrGone = errors.New("process has exited")

// Open opens a pidfd on p, checking after opening that the PID still
// belongs to p (so the pidfd cannot name a newer process with the same PID).
func Open(p *ID) (*Proc, error) {
	if !p.Alive() {
		return nil, ErrGone
	}
	fd, err := unix.PidfdOpen(p.PID, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, ErrGone
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", p.PID, err)
	}
	if !p.Alive() {
		unix.Close(fd)
		return nil, ErrGone
	}
	return &Proc{id: *p, fd: fd}, nil
}

// Close releases the pidfd.
func (p *Proc) Close() { unix.Close(p.fd) }

// Signal sends sig to the process; a process that has exited is not an
// error.
func (p *Proc) Signal(sig unix.Signal) error {
	err := unix.PidfdSendSignal(p.fd, sig, nil, 0)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal process %d: %w", p.id.PID, err)
	}
	return nil
}

// Exited reports whether the process has exited (a pidfd polls readable
// then; a zombie counts as exited).
func (p *Proc) Exited() bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// Wait waits for the process to exit, or for ctx to end.
func (p *Proc) Wait(ctx context.Context) error {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	for {
		// Short poll slices so ctx is noticed; the exit itself is an event.
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for process %d: %w", p.id.PID, err)
		}
		if n > 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// KillAndWait sends SIGKILL to the process p names, if it still runs, and
// waits (bounded) for it to exit.
func KillAndWait(p *ID, limit time.Duration) error {
	pr, err := Open(p)
	if err != nil {
		if errors.Is(err, ErrGone) {
			return nil
		}
		return err
	}
	defer pr.Close()
	if err := pr.Signal(unix.SIGKILL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := pr.Wait(ctx); err != nil {
		return fmt.Errorf("process %d was sent SIGKILL but has not exited within %s", p.PID, limit)
	}
	return nil
}
