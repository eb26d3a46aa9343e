// Package netproc starts and watches the process that serves a VM's user
// network (microagent-net, or passt for the benchmark's floor): the
// socket pair it shares with the VMM, its start from a goroutine that
// keeps its OS thread (so Pdeathsig works), its reaping and its kill.
package netproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// killWait bounds the wait for a process sent SIGKILL to be reaped.
const killWait = 10 * time.Second

// SocketPair makes the connected pair of stream sockets a network process
// and its VMM exchange frames on (QEMU's -netdev stream framing). Both are
// close-on-exec: the caller passes each to its process explicitly.
func SocketPair(name string) (vmmEnd, netEnd *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: socket pair: %w", name, err)
	}
	// Frames queue in this socket both ways. With the default ~200 KiB
	// buffers, host -> guest transfers crawled (3 MB/s against 30+) and
	// once stalled for minutes; 4 MiB (the usual wmem_max, which caps it)
	// keeps both sides streaming. Best effort: a lower cap only costs speed.
	for _, fd := range fds {
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4<<20)
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<20)
	}
	return os.NewFile(uintptr(fds[0]), name+"-vmm"), os.NewFile(uintptr(fds[1]), name), nil
}

// Process is a started network process.
type Process struct {
	name string
	cmd  *exec.Cmd
	pid  int
	done chan struct{}
	err  error // set before done is closed
}

// Start starts cmd (named name in errors). With dieWithParent the
// starting goroutine keeps its OS thread until the process exits: Linux
// sends Pdeathsig when the thread that forked the child exits, and the Go
// runtime may retire threads. Before reaping, drain (if not nil) runs
// (cmd.Wait closes the pipes it reads); describe turns a failed exit into
// the error Wait returns.
func Start(name string, cmd *exec.Cmd, dieWithParent bool, drain func(), describe func(error) error) (*Process, error) {
	p := &Process{name: name, cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		if dieWithParent {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		if drain != nil {
			drain()
		}
		if err := cmd.Wait(); err != nil {
			p.err = describe(err)
		}
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	p.pid = cmd.Process.Pid
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait blocks until the process exits and returns how it ended (nil for
// status 0, its normal end when the VMM closes the socket).
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Kill stops the process at once and waits (bounded) for it to be reaped.
func (p *Process) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s (pid %d): %w", p.name, p.pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("%s (pid %d) was sent SIGKILL but has not exited", p.name, p.pid)
	}
}
