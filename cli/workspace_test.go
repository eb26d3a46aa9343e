package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/workspace"
)

// The workspace commands are tested through a real microagent binary in
// real processes: the supervisor is that binary re-executed, and exit codes
// and signals are those of a real process.

// buildCLI builds cmd/microagent into a test folder (the build cache makes
// repeats cheap).
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "microagent")
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/microagent")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build microagent: %v: %s", err, out)
	}
	return bin
}

type wsCLI struct {
	bin, state string
}

func (w *wsCLI) cmd(args ...string) *exec.Cmd {
	return exec.Command(w.bin, append([]string{"--state-dir", w.state}, args...)...)
}

// run runs the CLI and returns its exit code and output.
func (w *wsCLI) run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := w.cmd(args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// want runs the CLI and checks the exit code and that stderr (or stdout for
// success) holds msg.
func (w *wsCLI) want(t *testing.T, code int, msg string, args ...string) string {
	t.Helper()
	c, out, errs := w.run(t, "", args...)
	where := errs
	if code == 0 {
		where = out
	}
	if c != code || !strings.Contains(where, msg) {
		t.Fatalf("%v: exit %d, stdout %q, stderr %q; want exit %d with %q", args, c, out, errs, code, msg)
	}
	return out
}

// vmCLI sets up a state directory with the kernel, a registry serving a
// busybox image (ref) and the real binary; at cleanup every live workspace
// is killed and gc runs.
func vmCLI(t *testing.T) (w *wsCLI, ref string) {
	t.Helper()
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	ref = reg.PushBusybox(t, "busybox")
	t.Setenv("MICROAGENT_AGENT", vmenv.Agent(t))
	w = &wsCLI{bin: buildCLI(t), state: h.Root}
	t.Cleanup(func() { w.killLive(t) })
	return w, ref
}

// killLive kills every live workspace and runs gc (a failed test's
// leftovers).
func (w *wsCLI) killLive(t *testing.T) {
	var infos []workspace.Info
	if _, out, _ := w.run(t, "", "--json", "list"); json.Unmarshal([]byte(out), &infos) == nil {
		for _, i := range infos {
			if i.State.Live() || i.State == workspace.Paused {
				w.run(t, "", "kill", i.Name)
			}
		}
	}
	w.run(t, "", "gc")
}

func TestWorkspaceCommandsBadInput(t *testing.T) {
	w := &wsCLI{bin: buildCLI(t), state: t.TempDir()}
	for _, c := range []struct {
		code int
		msg  string
		args []string
	}{
		{ExitUsage, "invalid workspace name", []string{"create", "Bad!", "--image", "x"}},
		{ExitUsage, "needs --image", []string{"create", "app"}},
		{ExitUsage, "two names", []string{"create", "a", "--name", "b", "--image", "x"}},
		{ExitUsage, "unknown profile", []string{"create", "a", "--image", "x", "--profile", "huge"}},
		{ExitUsage, "has no scheme", []string{"create", "a", "--image", "x", "--secret", "A=B"}},
		{ExitUsage, "declared twice", []string{"create", "a", "--image", "x", "--secret", "A=env:B", "--secret-on-demand", "A=env:C"}},
		{ExitUsage, "unknown scheme (known:", []string{"start", "app", "--secret", "A=nosuch:x"}},
		{ExitOwnFailure, "invalid workspace name", []string{"exec", "x.y", "--", "true"}},
		{ExitOwnFailure, `--cwd "work": give an absolute path`, []string{"exec", "app", "--cwd", "work", "--", "true"}},
		{ExitOwnFailure, `--workdir "work": give an absolute path`, []string{"exec", "-w", "work", "app", "true"}},
		{ExitOwnFailure, `--workdir "work": give an absolute path`, []string{"run", "-w", "work", "img", "true"}},
		{ExitUsage, "pass --yes", []string{"delete", "app"}},
		{ExitOwnFailure, "requires at least 2 arg", []string{"exec", "app"}},
		{ExitFailure, "no such workspace", []string{"start", "app"}},
		{ExitOwnFailure, "no such workspace", []string{"exec", "app", "--", "true"}},
		{ExitOwnFailure, "no such workspace", []string{"exec", "app", "ls", "-la"}},
		{ExitFailure, "no such workspace", []string{"halt", "app"}},
		{ExitFailure, "no such workspace", []string{"kill", "app"}},
		{ExitFailure, "no such workspace", []string{"status", "app"}},
		{ExitFailure, "no such workspace", []string{"logs", "app"}},
		{ExitFailure, "no such workspace", []string{"wait", "app"}},
		{ExitFailure, "no such workspace", []string{"delete", "--yes", "app"}},
		{ExitUsage, `the guest port "0" is not a port`, []string{"port-forward", "app", "8080:0"}},
		{ExitUsage, `the local port "x" is not a port`, []string{"port-forward", "app", "x:80"}},
		{ExitUsage, `--address "nowhere" is not an IP address`, []string{"port-forward", "app", "80", "--address", "nowhere"}},
		{ExitUsage, "requires at least 2 arg", []string{"port-forward", "app"}},
		{ExitFailure, "no such workspace", []string{"port-forward", "app", "8080"}},
	} {
		w.want(t, c.code, c.msg, c.args...)
	}
	// --json: errors as JSON on stderr, empty lists as [].
	code, _, errs := w.run(t, "", "--json", "status", "nope")
	var e struct {
		Error    string `json:"error"`
		ExitCode int    `json:"exitCode"`
	}
	if code != 1 || json.Unmarshal([]byte(errs), &e) != nil || e.ExitCode != 1 || !strings.Contains(e.Error, "no such workspace") {
		t.Fatalf("--json error: %d %q", code, errs)
	}
	for _, cmd := range []string{"list", "ps"} {
		if out := w.want(t, 0, "", "--json", cmd); strings.TrimSpace(out) != "[]" {
			t.Fatalf("%s --json: %q", cmd, out)
		}
	}
	var rep workspace.GCReport
	if out := w.want(t, 0, "", "--json", "gc"); json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("gc --json: %q", out)
	}
	if ents, _ := os.ReadDir(filepath.Join(w.state, workspace.Dir)); len(ents) != 0 {
		t.Fatalf("bad input changed the state: %v", ents)
	}
}

// TestWorkspaceSession runs the session, with exit codes, --json,
// a TTY, signal forwarding and the refusals a running or halted workspace
// gives.
func TestWorkspaceSession(t *testing.T) {
	w, ref := vmCLI(t)

	var inf workspace.Info
	out := w.want(t, 0, "", "--json", "create", "app", "--image", ref, "--profile", "tiny", "--disk-size", "300M", "--memory", "160M")
	if json.Unmarshal([]byte(out), &inf) != nil || inf.State != workspace.Created || inf.Resources.DiskBytes != 300<<20 || inf.Resources.MemoryMiB != 160 {
		t.Fatalf("create --json: %s", out)
	}
	w.want(t, ExitFailure, "already exists", "create", "--name", "app", "--image", ref)
	w.want(t, ExitOwnFailure, "not running", "exec", "app", "--", "true")
	w.want(t, 0, "Started app", "start", "app")
	w.want(t, ExitFailure, "workspace is running", "start", "app")
	w.want(t, ExitFailure, "--force", "delete", "--yes", "app")
	w.want(t, 0, "", "exec", "app", "--", "sh", "-c", "echo hi > /root/f")

	// Exit codes, streams, stdin, env, cwd, timeout, not found.
	if code, out, errs := w.run(t, "", "exec", "app", "--", "sh", "-c", "echo out; echo err >&2; exit 7"); code != 7 || out != "out\n" || errs != "err\n" {
		t.Fatalf("exec: %d %q %q", code, out, errs)
	}
	if code, out, _ := w.run(t, "in\n", "exec", "-i", "app", "--", "cat"); code != 0 || out != "in\n" {
		t.Fatalf("exec -i: %d %q", code, out)
	}
	if code, out, _ := w.run(t, "ignored", "exec", "app", "--", "cat"); code != 0 || out != "" {
		t.Fatalf("exec without -i read stdin: %d %q", code, out)
	}
	if code, out, _ := w.run(t, "", "exec", "-e", "A=1", "--cwd", "/tmp", "app", "--", "sh", "-c", "echo $A; pwd"); code != 0 || out != "1\n/tmp\n" {
		t.Fatalf("exec -e --cwd: %d %q", code, out)
	}
	w.want(t, 124, "timed out", "exec", "--timeout", "200ms", "app", "--", "sleep", "20")
	w.want(t, 127, "not found", "exec", "app", "--", "no-such-cmd")
	// --json: one object on stdout; bytes that are not UTF-8 come base64.
	code, out, errs := w.run(t, "", "--json", "exec", "app", "sh", "-c", `printf '\200\201x'; echo err >&2; kill -KILL $$`)
	var res resultJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 137 || res.ExitCode != 137 || res.Signal != 9 ||
		res.Stdout != (streamJSON{Data: "gIF4", Encoding: "base64", Bytes: 3}) ||
		res.Stderr != (streamJSON{Data: "err\n", Encoding: "utf-8", Bytes: 4}) || res.Timings.TotalSeconds <= 0 {
		t.Fatalf("exec --json: %v, exit %d, stdout %q, stderr %q", err, code, out, errs)
	}
	code, out, _ = w.run(t, "", "--json", "exec", "--output-limit", "2", "app", "sh", "-c", "printf 'h\303\251llo'")
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 ||
		res.Stdout != (streamJSON{Data: "h", Encoding: "utf-8", Bytes: 6, Truncated: true}) { // é, cut in two, dropped
		t.Fatalf("exec --json --output-limit: %v, exit %d, stdout %q", err, code, out)
	}
	// Flags stop at the command, as docker exec's: -la is ls's; flags
	// right after NAME are still exec's.
	if code, out, errs := w.run(t, "", "exec", "app", "ls", "-la", "/root/f"); code != 0 || !strings.Contains(out, "/root/f") {
		t.Fatalf("exec app ls -la: %d %q %q", code, out, errs)
	}
	if code, out, _ := w.run(t, "", "exec", "-e", "A=1", "app", "-w", "/tmp", "-e", "B=2", "sh", "-c", "echo $A$B; pwd"); code != 0 || out != "12\n/tmp\n" {
		t.Fatalf("exec flags after NAME: %d %q", code, out)
	}
	if out := w.want(t, 0, "", "ps", "--format", "{{.Name}} {{.State}}"); out != "app running\n" {
		t.Fatalf("ps --format: %q", out)
	}

	// status, list, ps, logs (--json too).
	out = w.want(t, 0, "", "--json", "status", "app")
	if json.Unmarshal([]byte(out), &inf) != nil || inf.State != workspace.Running || inf.SupervisorPID == 0 {
		t.Fatalf("status --json: %s", out)
	}
	if out := w.want(t, 0, "supervisor: pid", "status", "app"); !strings.Contains(strings.Join(strings.Fields(out), " "), "state: running") {
		t.Fatalf("status: %s", out)
	}
	w.want(t, 0, "app", "ps")
	var list []workspace.Info
	if out := w.want(t, 0, "", "--json", "ls"); json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 {
		t.Fatalf("ls --json: %s", out)
	}
	out = w.want(t, 0, "", "--json", "logs", "--supervisor", "app")
	var piece struct{ Source, Data string }
	if json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &piece) != nil || piece.Source != "supervisor" || !strings.Contains(piece.Data, "booting") {
		t.Fatalf("logs --json: %s", out)
	}

	// Busy: another command holds the lock.
	lf, err := os.OpenFile(filepath.Join(w.state, workspace.Dir, "app", "lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Flock(int(lf.Fd()), unix.LOCK_EX)
	w.want(t, ExitRetryable, "busy: another command holds the lock", "halt", "app")
	w.want(t, 0, "hi", "exec", "app", "--", "cat", "/root/f") // exec takes no lock
	lf.Close()

	t.Run("tty", func(t *testing.T) { testTTY(t, w) })
	t.Run("signals", func(t *testing.T) { testSignal(t, w) })

	out = w.want(t, 0, "", "--json", "halt", "app")
	if json.Unmarshal([]byte(out), &inf) != nil || inf.State != workspace.Halted {
		t.Fatalf("halt --json: %s", out)
	}
	w.want(t, ExitOwnFailure, "app is halted", "exec", "app", "--", "true")
	w.want(t, 0, "app: halted", "wait", "app")
	w.want(t, 0, "Started", "start", "app")
	w.want(t, 0, "hi", "exec", "app", "--", "cat", "/root/f")
	w.want(t, 0, "Halted app", "stop", "app")
	w.want(t, 0, "Deleted app", "delete", "--yes", "app")
	w.want(t, 0, "NAME", "list")
	if out := w.want(t, 0, "", "--json", "list"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("list after delete: %s", out)
	}
}

// testTTY runs a command on a real terminal: the CLI gets a pty, puts it in
// raw mode, passes its size on, forwards a resize, and a ^C typed reaches
// the guest's terminal.
func testTTY(t *testing.T, w *wsCLI) {
	cmd := w.cmd("exec", "-i", "-t", "app", "--", "sh", "-c", "tty; while :; do stty size; sleep 0.2; done")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(ptmx)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("output ended before %q", want)
				}
				if strings.Contains(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q in the output", want)
			}
		}
	}
	expect("/dev/pts/")
	expect("30 100")
	pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}) // SIGWINCH to the CLI
	expect("40 120")
	ptmx.Write([]byte{3}) // ^C, passed through raw mode to the guest's terminal
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Fatalf("exec -t after ^C: %v", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("exec -t did not end after ^C")
	}
}

// testSignal: a signal to the CLI reaches the command's process group.
func testSignal(t *testing.T, w *wsCLI) {
	cmd := w.cmd("exec", "app", "--", "sh", "-c", `trap "echo got-int; exit 5" INT; echo ready; while :; do sleep 0.1; done`)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	if l, _ := r.ReadString('\n'); l != "ready\n" {
		t.Fatalf("got %q", l)
	}
	cmd.Process.Signal(syscall.SIGINT)
	rest, _ := io.ReadAll(r)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 || string(rest) != "got-int\n" {
		t.Fatalf("after SIGINT: %v, output %q", err, rest)
	}
}
