package workspace

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

// procID identifies a process across PID reuse: its PID, its start time in
// clock ticks since boot (field 22 of /proc/PID/stat) and the host's boot.
type procID struct {
	PID    int    `json:"pid"`
	Start  uint64 `json:"start"`
	BootID string `json:"bootId"`
}

var (
	bootOnce sync.Once
	bootID   string
)

// hostBootID is the kernel's random boot id: start times are only
// comparable within one boot.
func hostBootID() string {
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

// identify returns the identity of a live process.
func identify(pid int) (procID, error) {
	st, start, err := procStat(pid)
	if err != nil {
		return procID{}, err
	}
	if st == 'Z' || st == 'X' {
		return procID{}, fmt.Errorf("process %d has exited", pid)
	}
	return procID{PID: pid, Start: start, BootID: hostBootID()}, nil
}

func self() procID {
	id, err := identify(os.Getpid())
	if err != nil {
		return procID{PID: os.Getpid(), BootID: hostBootID()}
	}
	return id
}

// alive reports whether the process p names still runs (a zombie has
// exited).
func (p *procID) alive() bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	if p.BootID != hostBootID() {
		return false
	}
	st, start, err := procStat(p.PID)
	return err == nil && start == p.Start && st != 'Z' && st != 'X'
}

// proc is a handle on a live process: a pidfd, which keeps naming the same
// process even if its PID is reused.
type proc struct {
	id procID
	fd int
}

// errGone is returned by openProc for a process that no longer runs.
var errGone = errors.New("process has exited")

// openProc opens a pidfd on p, checking after opening that the PID still
// belongs to p (so the pidfd cannot name a newer process with the same PID).
func openProc(p *procID) (*proc, error) {
	if !p.alive() {
		return nil, errGone
	}
	fd, err := unix.PidfdOpen(p.PID, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, errGone
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", p.PID, err)
	}
	if !p.alive() {
		unix.Close(fd)
		return nil, errGone
	}
	return &proc{id: *p, fd: fd}, nil
}

func (p *proc) close() { unix.Close(p.fd) }

// signal sends sig to the process; a process that has exited is not an
// error.
func (p *proc) signal(sig unix.Signal) error {
	err := unix.PidfdSendSignal(p.fd, sig, nil, 0)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal process %d: %w", p.id.PID, err)
	}
	return nil
}

// exited reports whether the process has exited (a pidfd polls readable
// then; a zombie counts as exited).
func (p *proc) exited() bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// wait waits for the process to exit, or for ctx to end.
func (p *proc) wait(ctx context.Context) error {
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

// killAndWait sends SIGKILL to the process p names, if it still runs, and
// waits (bounded) for it to exit.
func killAndWait(p *procID, limit time.Duration) error {
	pr, err := openProc(p)
	if err != nil {
		if errors.Is(err, errGone) {
			return nil
		}
		return err
	}
	defer pr.close()
	if err := pr.signal(unix.SIGKILL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := pr.wait(ctx); err != nil {
		return fmt.Errorf("process %d was sent SIGKILL but has not exited within %s", p.PID, limit)
	}
	return nil
}
