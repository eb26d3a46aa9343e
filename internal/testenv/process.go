package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/proc"
)

// Process is a local server child (docker-registry, a Vault dev server)
// started for one test, with its stdout and stderr collected for failure
// messages.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	out    lockedBuffer
	stop   sync.Once
}

// StartProcess starts cmd with its output collected (see Output) and, unless
// cmd.SysProcAttr is set, killed when the test binary dies, so a server never
// outlives a test binary killed by a timeout.
func StartProcess(cmd *exec.Cmd) (*Process, error) {
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout = &p.out
	cmd.Stderr = &p.out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = pdeathsig()
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Args[0], err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Stop kills the process and waits for it to exit. Stopping twice, or after
// the process exited by itself, is fine.
func (p *Process) Stop() {
	p.stop.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
}

// ErrExited is WaitHTTP's error when the process exits before it is ready.
var ErrExited = errors.New("exited before it was ready")

// NotReadyError is WaitHTTP's error when time runs out. Its text, "last
// error …", is meant for parentheses after the caller's own words.
type NotReadyError struct {
	// Last is the last GET's error; nil when the server answered, but not
	// with 200 OK.
	Last error
}

func (e *NotReadyError) Error() string { return fmt.Sprintf("last error %v", e.Last) }

func (e *NotReadyError) Unwrap() error { return e.Last }

// WaitHTTP polls GET url every 20 ms, each GET bounded by clientTimeout,
// until it answers 200 OK (nil), exited is closed (ErrExited; a nil channel
// never is), or timeout has passed (*NotReadyError).
func WaitHTTP(url string, clientTimeout, timeout time.Duration, exited <-chan struct{}) error {
	client := &http.Client{Timeout: clientTimeout}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-exited:
			return ErrExited
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return &NotReadyError{Last: err}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartRetried calls start up to three times and returns the first server
// it starts, stopped when the test ends; after three failures the test fails
// with "start <what>: <last error>". Retrying covers a port from FreePort
// that another process took before the server could bind it.
func StartRetried[S interface{ Stop() }](t testing.TB, what string, start func() (S, error)) S {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := start()
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		lastErr = err
	}
	t.Fatalf("start %s: %v", what, lastErr)
	var zero S
	return zero
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it, so servers started
// on it are retried.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer collects a child's output from two pipes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// DeadProcess is the identity of a process that ran and has exited (a
// short sleep, started and killed): a record naming it must be seen as
// dead.
func DeadProcess(t testing.TB) *proc.ID {
	t.Helper()
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id, err := proc.Identify(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return &id
}

// Proc is one process of this host: its pid, its parent's and its command
// name (field 2 of /proc/PID/stat).
type Proc struct {
	PID, PPID int
	Comm      string
}

// Processes lists the host's processes, for tests that look for the
// children a command started.
func Processes() []Proc {
	var out []Proc
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// The name may hold spaces and parentheses: the fields after it
		// start behind the last ')'.
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(b[close+1:]))
		if len(f) < 2 {
			continue
		}
		pid, _ := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
		ppid, _ := strconv.Atoi(f[1])
		out = append(out, Proc{PID: pid, PPID: ppid, Comm: string(b[open+1 : close])})
	}
	return out
}
