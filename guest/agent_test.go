//go:build linux

package guest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
)

// The exec path runs unchanged on the host: these tests drive a real Agent
// (without its boot steps) over an in-memory connection through the real
// handshake and yamux session, and run real processes.
var testAgent = &Agent{reaper: newReaper(), started: time.Now()}

func connect(t *testing.T) *channel.Client {
	t.Helper()
	return connectAgent(t, testAgent, channel.HelloRequest{Env: []string{"FROM_IMAGE=1", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, Hostname: "h"})
}

// connectAgent serves a over the real handshake and a yamux session on an
// in-memory connection, and says hello.
func connectAgent(t *testing.T, a *Agent, hello channel.HelloRequest) *channel.Client {
	t.Helper()
	host, guest := net.Pipe()
	go func() {
		if err := channel.GuestHandshake(guest); err != nil {
			guest.Close()
			return
		}
		a.serveSession(guest)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := channel.Connect(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Hello(ctx, hello); err != nil {
		t.Fatal(err)
	}
	return c
}

func run(t *testing.T, c *channel.Client, req channel.ExecRequest, stdin []byte) (channel.ExitStatus, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var in *bytes.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
		req.Stdin = true
	}
	var es channel.ExitStatus
	var err error
	if in != nil {
		es, err = c.Exec(ctx, req, in, &out, &errb)
	} else {
		es, err = c.Exec(ctx, req, nil, &out, &errb)
	}
	if err != nil {
		t.Fatalf("exec %v: %v", req.Argv, err)
	}
	return es, out.String(), errb.String()
}

func TestExecExitCodesAndStreams(t *testing.T) {
	c := connect(t)
	es, out, errs := run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}}, nil)
	if es.Code != 7 || out != "out\n" || errs != "err\n" {
		t.Fatalf("got %+v %q %q", es, out, errs)
	}
	es, _, _ = run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", "kill -TERM $$"}}, nil)
	if es.Signal != int(syscall.SIGTERM) || es.Code != 128+int(syscall.SIGTERM) {
		t.Fatalf("signal: got %+v", es)
	}
	es, _, _ = run(t, c, channel.ExecRequest{Argv: []string{"no-such-command-xyz"}}, nil)
	if es.Code != 127 || !strings.Contains(es.Error, `"no-such-command-xyz" not found`) {
		t.Fatalf("not found: got %+v", es)
	}
	es, _, _ = run(t, c, channel.ExecRequest{Argv: []string{"true"}, Cwd: "/no/such/dir"}, nil)
	if es.Code != 126 || !strings.Contains(es.Error, "/no/such/dir") {
		t.Fatalf("bad cwd: got %+v", es)
	}
	es, _, _ = run(t, c, channel.ExecRequest{Argv: []string{"true"}, User: "no-such-user"}, nil)
	if es.Code != 126 || !strings.Contains(es.Error, "no-such-user") {
		t.Fatalf("bad user: got %+v", es)
	}
}

func TestExecStdinEnvCwd(t *testing.T) {
	c := connect(t)
	es, out, _ := run(t, c, channel.ExecRequest{Argv: []string{"cat"}}, []byte("hello stdin"))
	if es.Code != 0 || out != "hello stdin" {
		t.Fatalf("cat: %+v %q", es, out)
	}
	dir := t.TempDir()
	es, out, _ = run(t, c, channel.ExecRequest{
		Argv: []string{"sh", "-c", `echo "$FROM_IMAGE $X $HOSTNAME"; pwd`},
		Env:  []string{"X=from-request"},
		Cwd:  dir,
	}, nil)
	if es.Code != 0 || out != "1 from-request h\n"+dir+"\n" {
		t.Fatalf("env/cwd: %+v %q", es, out)
	}
}

func TestExecLargeOutputIsExact(t *testing.T) {
	c := connect(t)
	f := filepath.Join(t.TempDir(), "blob")
	data := make([]byte, 10<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	es, out, _ := run(t, c, channel.ExecRequest{Argv: []string{"cat", f}}, nil)
	if es.Code != 0 || sha256.Sum256([]byte(out)) != sha256.Sum256(data) {
		t.Fatalf("10 MiB output differs: %d bytes, code %d", len(out), es.Code)
	}
}

func TestExecTimeoutAndSignal(t *testing.T) {
	c := connect(t)
	es, _, _ := run(t, c, channel.ExecRequest{Argv: []string{"sleep", "30"}, Timeout: 200 * time.Millisecond}, nil)
	if !es.TimedOut || es.Signal != int(syscall.SIGKILL) {
		t.Fatalf("timeout: %+v", es)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One process (the shell execs sleep), so SIGINT ends it whenever it
	// lands: a shell between its echo and its child's start raced it.
	p, err := c.Start(ctx, channel.ExecRequest{Argv: []string{"sh", "-c", "echo ready; exec sleep 30"}})
	if err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	done := make(chan channel.ExitStatus, 1)
	go func() {
		es, _ := p.Wait(w, nil)
		w.Close()
		done <- es
	}()
	buf := make([]byte, 6)
	if _, err := r.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("read: %q %v", buf, err)
	}
	if err := p.Signal(int(syscall.SIGINT)); err != nil {
		t.Fatal(err)
	}
	select {
	case es := <-done:
		if es.Signal != int(syscall.SIGINT) {
			t.Fatalf("signal forwarded: %+v", es)
		}
	case <-ctx.Done():
		t.Fatal("process did not end after SIGINT")
	}
}

func TestExecTTY(t *testing.T) {
	c := connect(t)
	es, out, _ := run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", "test -t 0 && stty size"}, TTY: true, Rows: 33, Cols: 101}, nil)
	if es.Code != 0 || !strings.Contains(out, "33 101") {
		t.Fatalf("tty: %+v %q", es, out)
	}
}

func TestLookupUser(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nagent:x:1000:\nwheel:x:10:agent\n"), 0o644)
	for _, tc := range []struct {
		spec     string
		uid, gid uint32
		home     string
		groups   int
		err      bool
	}{
		{"", 0, 0, "/root", 0, false},
		{"agent", 1000, 1000, "/home/agent", 1, false},
		{"1000", 1000, 1000, "/home/agent", 1, false},
		{"4242", 4242, 4242, "/", 0, false},
		{"agent:wheel", 1000, 10, "/home/agent", 0, false},
		{"1000:55", 1000, 55, "/home/agent", 0, false},
		{"nobody-here", 0, 0, "", 0, true},
		{"agent:nogroup", 0, 0, "", 0, true},
	} {
		id, err := lookupUserIn(root, tc.spec)
		if tc.err {
			if err == nil {
				t.Errorf("%q: want error", tc.spec)
			}
			continue
		}
		if err != nil || id.uid != tc.uid || id.gid != tc.gid || id.home != tc.home || len(id.groups) != tc.groups {
			t.Errorf("%q: got %+v, %v", tc.spec, id, err)
		}
	}
}

// TestExecBackgroundAndLostStream: what an exec starts in the background
// outlives the exec (its end is not a lost stream), but a stream lost while
// the process runs kills its process group.
func TestExecBackgroundAndLostStream(t *testing.T) {
	c := connect(t)
	es, out, _ := run(t, c, channel.ExecRequest{Argv: []string{"sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"}}, nil)
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if es.Code != 0 || err != nil {
		t.Fatalf("exec: %+v %q", es, out)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	// The agent's handler has returned once run has the exit status; give
	// the stream's end a bounded moment to (wrongly) kill the group.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("the background process died with the exec: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A lost stream: the host connection closes while sleep runs.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.Start(ctx, channel.ExecRequest{Argv: []string{"sh", "-c", "echo $$; sleep 30"}})
	if err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	go p.Wait(w, nil)
	line := make([]byte, 32)
	n, _ := r.Read(line)
	spid, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
	if err != nil {
		t.Fatalf("pid line %q", line[:n])
	}
	c.Close()
	for syscall.Kill(spid, 0) == nil {
		if ctx.Err() != nil {
			syscall.Kill(-spid, syscall.SIGKILL)
			t.Fatal("the process group outlived its lost stream")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
