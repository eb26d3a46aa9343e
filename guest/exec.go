//go:build linux

package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
)

// outputGrace is how long output is still collected after the process exits,
// for a background child that keeps the pipes open.
const outputGrace = 250 * time.Millisecond

// streamWriter serialises frames written to one stream from several goroutines.
type streamWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *streamWriter) frame(t channel.FrameType, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return channel.WriteFrame(s.w, t, b)
}

func (s *streamWriter) exit(es channel.ExitStatus) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return channel.WriteJSON(s.w, channel.FrameExit, es)
}

// pump copies r to frames of type t until r ends.
func (s *streamWriter) pump(r io.Reader, t channel.FrameType) {
	buf := make([]byte, 32<<10)
	// A workload may print a secret; the agent keeps no copy of it past
	// the process (yamux has sent the frame when Write returns).
	defer clear(buf)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if s.frame(t, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// runExec runs one exec request on stream st and reports its exit.
func (a *Agent) runExec(st io.ReadWriteCloser, req *channel.ExecRequest) {
	out := &streamWriter{w: st}
	es := a.execute(st, out, req)
	out.exit(es)
}

func startErr(code int, err error) channel.ExitStatus {
	return channel.ExitStatus{Code: code, Error: err.Error()}
}

func (a *Agent) execute(st io.Reader, out *streamWriter, req *channel.ExecRequest) channel.ExitStatus {
	if a.bootErr != "" {
		return startErr(126, fmt.Errorf("the guest failed to boot: %s", a.bootErr))
	}
	if len(req.Argv) == 0 {
		return startErr(126, errors.New("empty command"))
	}
	cfg := a.config()
	userSpec := req.User
	if userSpec == "" {
		userSpec = cfg.User
	}
	id, err := lookupUser(userSpec)
	if err != nil {
		return startErr(126, err)
	}
	// The secret swap's placeholders and CA variables come after the
	// image's variables, before the request's own (which may override).
	env := buildEnv(append(slices.Clone(cfg.Env), a.egressEnvironment()...), req.Env, id, cfg.Hostname, req.TTY)
	if a.secretsSocket() {
		env = append(env, SecretsSockEnv+"="+a.secrets.sock)
	}
	// Secrets delivered as variables come last: the host leaves no other
	// variable of their names (see k8snode's planPod).
	secretEnv, releaseEnv := a.secretEnvironment()
	defer releaseEnv()
	env = append(env, secretEnv...)
	dir := req.Cwd
	if dir == "" {
		dir = cfg.WorkingDir
		if dir != "" {
			// The image's WorkingDir is created on demand, as Docker does.
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return startErr(126, fmt.Errorf("working directory %s: %w", dir, err))
			}
		}
	}
	if dir == "" {
		dir = "/"
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return startErr(126, fmt.Errorf("working directory %q does not exist in the guest", dir))
	}
	argv0, err := lookPath(req.Argv[0], envGet(env, "PATH"), dir)
	if err != nil {
		code := 126
		if errors.Is(err, errNotFound) {
			code = 127
		}
		return startErr(code, err)
	}

	sys := &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: id.uid, Gid: id.gid, Groups: id.groups},
	}
	var files [3]*os.File
	var parentEnds []*os.File // closed once the process has them
	var stdinW io.WriteCloser
	var outputs []io.Reader
	var ptm *os.File
	if req.TTY {
		m, s, err := pty.Open()
		if err != nil {
			return startErr(126, fmt.Errorf("open a pseudo-terminal: %w", err))
		}
		ptm = m
		defer m.Close()
		if req.Rows > 0 && req.Cols > 0 {
			pty.Setsize(m, &pty.Winsize{Rows: req.Rows, Cols: req.Cols})
		}
		files = [3]*os.File{s, s, s}
		parentEnds = append(parentEnds, s)
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
		stdinW = m
		outputs = []io.Reader{m}
	} else {
		sys.Setpgid = true
		if req.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return startErr(126, err)
			}
			files[0], stdinW = r, w
			parentEnds = append(parentEnds, r)
		} else {
			null, err := os.Open(os.DevNull)
			if err != nil {
				return startErr(126, err)
			}
			files[0] = null
			parentEnds = append(parentEnds, null)
		}
		for i := 1; i <= 2; i++ {
			r, w, err := os.Pipe()
			if err != nil {
				return startErr(126, err)
			}
			defer r.Close()
			files[i] = w
			parentEnds = append(parentEnds, w)
			outputs = append(outputs, r)
		}
	}
	attr := &syscall.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []uintptr{files[0].Fd(), files[1].Fd(), files[2].Fd()},
		Sys:   sys,
	}
	pid, done, err := a.reaper.start(argv0, req.Argv, attr)
	releaseEnv() // the process has its copy
	for _, f := range parentEnds {
		f.Close()
	}
	if err != nil {
		if stdinW != nil && ptm == nil {
			stdinW.Close()
		}
		return startErr(126, fmt.Errorf("start %q: %w", req.Argv[0], err))
	}

	// Output pumps: a TTY has one stream, pipes two.
	var pumps sync.WaitGroup
	for i, r := range outputs {
		t := channel.FrameStdout
		if i == 1 {
			t = channel.FrameStderr
		}
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			out.pump(r, t)
		}()
	}

	// Input: stdin, signals and resizes from the host. When the stream is
	// lost (the host went away) while the process runs, its process group
	// is killed. Once the process has exited, the stream's end is just the
	// end of the exec: what it started in the background runs on, as with
	// docker exec.
	signalGroup := func(sig syscall.Signal) { unix.Kill(-pid, sig) }
	var exited atomic.Bool
	go func() {
		buf := make([]byte, 64<<10)
		defer clear(buf) // stdin may carry a secret (the host sends 32 KiB frames)
		for {
			t, b, err := channel.ReadFrame(st, buf)
			if err != nil {
				if !exited.Load() {
					signalGroup(syscall.SIGKILL)
				}
				return
			}
			switch t {
			case channel.FrameStdin:
				if stdinW != nil {
					stdinW.Write(b)
				}
			case channel.FrameStdinEOF:
				if stdinW != nil {
					if ptm != nil {
						ptm.Write([]byte{4}) // ^D: end of input on a terminal
					} else {
						stdinW.Close()
					}
				}
			case channel.FrameSignal:
				if len(b) == 1 {
					signalGroup(syscall.Signal(b[0]))
				}
			case channel.FrameResize:
				if ptm != nil && len(b) == 4 {
					pty.Setsize(ptm, &pty.Winsize{Rows: binary.BigEndian.Uint16(b), Cols: binary.BigEndian.Uint16(b[2:])})
				}
			}
		}
	}()

	var timedOut bool
	var tmu sync.Mutex
	if req.Timeout > 0 {
		t := time.AfterFunc(req.Timeout, func() {
			tmu.Lock()
			timedOut = true
			tmu.Unlock()
			signalGroup(syscall.SIGKILL)
		})
		defer t.Stop()
	}

	ws := <-done
	exited.Store(true)
	if stdinW != nil && ptm == nil {
		stdinW.Close()
	}
	pumpsDone := make(chan struct{})
	go func() { pumps.Wait(); close(pumpsDone) }()
	select {
	case <-pumpsDone:
	case <-time.After(outputGrace):
		// A background child holds the output open; stop collecting.
		for _, r := range outputs {
			if c, ok := r.(io.Closer); ok {
				c.Close()
			}
		}
		<-pumpsDone
	}
	es := channel.ExitStatus{Code: ws.ExitStatus()}
	if ws.Signaled() {
		es.Signal = int(ws.Signal())
		es.Code = 128 + es.Signal
	}
	tmu.Lock()
	es.TimedOut = timedOut
	tmu.Unlock()
	return es
}
