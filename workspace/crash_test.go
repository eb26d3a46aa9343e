package workspace

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/wsdir"
)

// cli returns the microagent binary as a command on this state directory;
// the test must have set it up with withCLI.
func (e *env) cli(args ...string) *exec.Cmd {
	if e.cliExe == "" {
		panic("env.cli without withCLI: the test has no microagent binary")
	}
	cmd := exec.Command(e.cliExe, append([]string{"--state-dir", e.h.Root}, args...)...)
	cmd.Env = append(os.Environ(), "MICROAGENT_AGENT="+e.agent)
	return cmd
}

// waitFor polls cond (bounded) until it holds.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) record(t *testing.T, name string) *wsdir.Record {
	t.Helper()
	r, err := newWS(e.h, name).ReadRecord()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// qemuPID finds the workspace's QEMU by its command line (it is not
// recorded until the guest is ready).
func (e *env) qemuPID(name string) int {
	dir := e.h.Path(Dir, name) + "/"
	for _, ids := range scanProcs(e.h) {
		for _, id := range ids {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(id.PID) + "/cmdline")
			argv0, _, _ := bytes.Cut(b, []byte{0})
			if strings.HasPrefix(filepath.Base(string(argv0)), "qemu") && bytes.Contains(b, []byte(dir)) {
				return id.PID
			}
		}
	}
	return 0
}

func kill9(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("kill -9: no pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
}

// settled checks what every crash must leave: a truthful status (want),
// no process, no socket; gc then finds no orphan and leaves the lock free.
func (e *env) settled(t *testing.T, name string, want State, reason string) {
	t.Helper()
	// QEMU dies with its supervisor, asynchronously.
	waitFor(t, "no processes left", 15*time.Second, func() bool { return len(e.procs()) == 0 })
	inf := e.status(t, name)
	if inf.State != want || !strings.Contains(inf.Reason, reason) {
		t.Fatalf("%s: status %s (%q), want %s with %q", name, inf.State, inf.Reason, want, reason)
	}
	if _, err := GC(testCtx(t), e.h); err != nil {
		t.Fatal(err)
	}
	e.assertAtRest(t, name, want)
	if op, held := wsdir.LockHeld(e.h.Path(Dir, name, wsdir.LockFile)); held {
		t.Fatalf("%s: lock still held by %s", name, op)
	}
	if inf := e.status(t, name); inf.State != want {
		t.Fatalf("%s: after gc: %s (%s)", name, inf.State, inf.Reason)
	}
}

// execBackground starts "exec" in a CLI process and waits for the command
// to print "started".
func (e *env) execBackground(t *testing.T, name string, script string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := e.cli("exec", name, "--", "sh", "-c", "echo started; "+script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "started\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("exec did not start: %q %v: %s", line, err, errb.String())
	}
	go io.Copy(io.Discard, out)
	return cmd, &errb
}

// execOwnFailure is the CLI's exit code when exec itself fails (its
// ExitOwnFailure, as docker's 125; this package cannot import the CLI).
const execOwnFailure = 125

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestKill9Matrix kills the CLI, the supervisor and QEMU with SIGKILL
// during start, exec and halt. After each, status must tell the truth, no
// process, socket or lock may be left (after gc at most), and the
// workspace must start again. (A killed VM loses what the guest had not
// synced, so the test syncs what it expects to find again.)
func TestKill9Matrix(t *testing.T) {
	e := setup(t).withCLI(t)
	const ws = "k9"
	e.create(t, ws)
	ctx := testCtx(t)

	// --- start ---
	t.Run("cli during start", func(t *testing.T) {
		cmd := e.cli("start", ws)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the supervisor to be recorded", 30*time.Second, func() bool { return e.record(t, ws).Supervisor != nil })
		kill9(t, cmd.Process.Pid)
		cmd.Wait()
		// The supervisor boots on alone: the workspace is starting, then
		// running.
		if inf := e.status(t, ws); inf.State != Starting && inf.State != Running {
			t.Fatalf("after the start command died: %s (%s)", inf.State, inf.Reason)
		}
		inf, err := Wait(ctx, e.h, WaitOptions{Name: ws, Running: true})
		if err != nil || inf.State != Running {
			t.Fatalf("wait running: %+v %v", inf, err)
		}
		if code, out, _ := e.exec(t, ws, "", "sh", "-c", "echo kept > /root/k && sync && cat /root/k"); code != 0 || out != "kept\n" {
			t.Fatalf("exec: %d %q", code, out)
		}
	})

	// --- exec ---
	t.Run("cli during exec", func(t *testing.T) {
		cmd, _ := e.execBackground(t, ws, "exec sleep 1000")
		kill9(t, cmd.Process.Pid)
		cmd.Wait()
		// The guest kills the orphaned command.
		waitFor(t, "the guest to kill the command", 20*time.Second, func() bool {
			_, out, _ := e.exec(t, ws, "", "sh", "-c", "ps -o comm | grep -c '^sleep' || true")
			return out == "0\n"
		})
		// The supervisor drops the stream once the guest reports the exit.
		waitFor(t, "the supervisor to drop the exec", 10*time.Second, func() bool {
			inf := e.status(t, ws)
			if inf.State != Running {
				t.Fatalf("after the exec command died: %+v", inf)
			}
			return inf.Execs == 0
		})
	})
	t.Run("qemu during exec", func(t *testing.T) {
		cmd, errb := e.execBackground(t, ws, "exec sleep 1000")
		kill9(t, e.status(t, ws).VMMPID)
		err := cmd.Wait()
		if exitCode(err) != execOwnFailure || !strings.Contains(errb.String(), "lost") {
			t.Fatalf("exec after QEMU died: %v, stderr %q", err, errb.String())
		}
		e.settled(t, ws, Failed, "VM process exited unexpectedly")
		e.start(t, ws)
	})
	t.Run("supervisor during exec", func(t *testing.T) {
		cmd, errb := e.execBackground(t, ws, "exec sleep 1000")
		sup := e.status(t, ws).SupervisorPID
		kill9(t, sup)
		err := cmd.Wait()
		if exitCode(err) != execOwnFailure || !strings.Contains(errb.String(), "lost") {
			t.Fatalf("exec after the supervisor died: %v, stderr %q", err, errb.String())
		}
		e.settled(t, ws, Failed, "supervisor (pid "+strconv.Itoa(sup)+") died while running")
		// A failed workspace refuses exec with the reason.
		if _, err := Exec(ctx, e.h, ExecOptions{Name: ws, Argv: []string{"true"}}); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "died") {
			t.Fatalf("exec on a failed workspace: %v", err)
		}
	})

	// --- start, continued ---
	t.Run("supervisor during start", func(t *testing.T) {
		cmd := e.cli("start", ws)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the supervisor to be recorded", 30*time.Second, func() bool { return e.record(t, ws).Supervisor != nil })
		waitFor(t, "QEMU to start", 30*time.Second, func() bool { return e.qemuPID(ws) > 0 })
		kill9(t, e.record(t, ws).Supervisor.PID)
		if err := cmd.Wait(); exitCode(err) != 1 || !strings.Contains(errb.String(), "supervisor exited during boot") {
			t.Fatalf("start: %v, stderr %q", err, errb.String())
		}
		e.settled(t, ws, Failed, "supervisor exited during boot")
	})
	t.Run("qemu during start", func(t *testing.T) {
		cmd := e.cli("start", ws)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "QEMU to start", 30*time.Second, func() bool { return e.qemuPID(ws) > 0 })
		kill9(t, e.qemuPID(ws))
		// Depending on the moment: "qemu exited during start", "the VM
		// stopped during boot: ... signal: killed", or (when microvm sees
		// the lost channel before QEMU is reaped) "connection reset".
		err := cmd.Wait()
		if exitCode(err) != 1 || !strings.Contains(errb.String(), "start: ") {
			t.Fatalf("start: %v, stderr %q", err, errb.String())
		}
		_, msg, _ := strings.Cut(strings.TrimSpace(errb.String()), "start: ")
		e.settled(t, ws, Failed, msg)
	})

	// --- halt --- (a TERM-proof process makes the guest take ~2 s to stop)
	slowHalt := func(t *testing.T) (*exec.Cmd, *bytes.Buffer) {
		t.Helper()
		if inf := e.status(t, ws); inf.State != Running {
			e.start(t, ws)
		}
		bg, _ := e.execBackground(t, ws, "trap '' TERM; while :; do sleep 1; done")
		t.Cleanup(func() { bg.Process.Kill(); bg.Wait() })
		cmd := e.cli("halt", ws)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "halting", 30*time.Second, func() bool { return e.record(t, ws).State == Halting })
		return cmd, &errb
	}
	t.Run("cli during halt", func(t *testing.T) {
		cmd, _ := slowHalt(t)
		kill9(t, cmd.Process.Pid)
		cmd.Wait()
		inf, err := Wait(ctx, e.h, WaitOptions{Name: ws})
		if err != nil || inf.State != Halted || inf.Reason != "" {
			t.Fatalf("the halt did not complete on its own: %+v %v", inf, err)
		}
		e.settled(t, ws, Halted, "")
		e.start(t, ws)
		if code, out, _ := e.exec(t, ws, "", "cat", "/root/k"); code != 0 || out != "kept\n" {
			t.Fatalf("disk after crashes: %d %q", code, out)
		}
	})
	t.Run("supervisor during halt", func(t *testing.T) {
		cmd, errb := slowHalt(t)
		sup := e.record(t, ws).Supervisor.PID
		kill9(t, sup)
		if err := cmd.Wait(); exitCode(err) != 1 || !strings.Contains(errb.String(), "died while halting") {
			t.Fatalf("halt: %v: %s", err, errb.String())
		}
		e.settled(t, ws, Failed, "died while halting")
	})
	t.Run("qemu during halt", func(t *testing.T) {
		cmd, errb := slowHalt(t)
		kill9(t, e.record(t, ws).VMM.PID)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("halt: %v: %s", err, errb.String())
		}
		e.settled(t, ws, Halted, "VM process exited during the halt")
	})

	// After all that, the workspace starts and deletes.
	e.start(t, ws)
	if err := Delete(ctx, e.h, DeleteOptions{Name: ws, Force: true}); err != nil {
		t.Fatal(err)
	}
	e.assertNoProcs(t)
	_ = context.Background
}
