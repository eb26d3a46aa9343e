package workspace

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/wsdir"

	// The supervisor this test binary runs boots VMs through the backend
	// the manifest names, as cmd/microagent's does.
	_ "github.com/microagent-dev/microagent/vmm/qemu"
)

// The VM tests boot real QEMU microVMs from images served by a real
// registry and check that nothing is left behind. The supervisor is this
// test binary itself (see TestMain); the few tests that run CLI commands as
// processes use a freshly built microagent binary (withCLI).

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// TestMain is also the supervisor's entry point: Start re-executes this
// test binary (StartOptions.Executable) as cmd/microagent's hidden
// supervise command would be, and it then runs the supervisor instead of
// the tests, as os/exec's helper-process tests do. That spares building
// the CLI for every test that only starts workspaces through the library.
func TestMain(m *testing.M) {
	if _, ok := supervisor.ParseArgs(os.Args); ok {
		os.Exit(superviseMain())
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// superviseMain runs the supervisor as the CLI does (cli.Main with its
// supervise command): stopping on SIGINT or SIGTERM, the error on stderr
// (the supervisor log), exit code 1 on failure.
func superviseMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := supervisor.Main(ctx, os.Args, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "microagent: %v\n", err)
		return 1
	}
	return 0
}

// testBinary is this test binary's absolute path: the supervisor runs in
// /, where a relative os.Args[0] would name nothing.
func testBinary(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("find the test binary to run the supervisor: %v", err)
	}
	return exe
}

// cliBinary builds cmd/microagent once per test process, for the tests
// that need the real CLI as a process of its own.
func cliBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "microagent-bin-")
		if binErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		args := []string{"build", "-o", filepath.Join(binDir, "microagent")}
		if raceBuild {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/microagent")...)
		cmd.Dir = filepath.Join(filepath.Dir(file), "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = &buildErr{string(out), err}
		}
	})
	if binErr != nil {
		t.Fatalf("build microagent: %v", binErr)
	}
	return filepath.Join(binDir, "microagent")
}

type buildErr struct {
	out string
	err error
}

func (e *buildErr) Error() string { return e.err.Error() + ": " + e.out }

type env struct {
	h   home.Home
	ref string
	// exe runs the supervisor: this test binary.
	exe string
	// cliExe is the microagent binary e.cli runs (set by withCLI).
	cliExe string
	agent  string
}

func setup(t *testing.T) *env {
	t.Helper()
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	e := &env{h: h, ref: reg.PushBusybox(t, "busybox"), exe: testBinary(t), agent: vmenv.Agent(t)}
	t.Setenv("MICROAGENT_AGENT", e.agent)
	t.Cleanup(func() { e.teardown(t) })
	return e
}

// withCLI builds the microagent binary (once per test process) for the
// test's e.cli commands.
func (e *env) withCLI(t *testing.T) *env {
	t.Helper()
	e.cliExe = cliBinary(t)
	return e
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) create(t *testing.T, name string) *Info {
	t.Helper()
	inf, err := Create(testCtx(t), e.h, CreateOptions{Name: name, Image: e.ref, Agent: e.agent, Profile: "tiny", Resources: Resources{DiskBytes: 256 << 20}})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return inf
}

func (e *env) start(t *testing.T, name string) *Info {
	t.Helper()
	inf, err := Start(testCtx(t), e.h, StartOptions{Name: name, Executable: e.exe, Agent: e.agent})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	if inf.State != Running {
		t.Fatalf("start %s: state %s (%s)", name, inf.State, inf.Reason)
	}
	return inf
}

// exec runs a command and returns its exit code and output.
func (e *env) exec(t *testing.T, name, stdin string, argv ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	o := ExecOptions{Name: name, Argv: argv, Stdout: &out, Stderr: &errb}
	if stdin != "" {
		o.Stdin = strings.NewReader(stdin)
	}
	es, err := Exec(testCtx(t), e.h, o)
	if err != nil {
		t.Fatalf("exec %v in %s: %v", argv, name, err)
	}
	return es.Code, out.String(), errb.String()
}

func (e *env) status(t *testing.T, name string) *Info {
	t.Helper()
	inf, err := Status(testCtx(t), e.h, name)
	if err != nil {
		t.Fatalf("status %s: %v", name, err)
	}
	return inf
}

// teardown kills whatever a failed test left running, then checks that
// nothing is left.
func (e *env) teardown(t *testing.T) {
	infos, _ := List(context.Background(), e.h)
	for _, i := range infos {
		if i.State.Live() {
			Kill(context.Background(), e.h, i.Name)
		}
	}
	GC(context.Background(), e.h)
	e.assertNoProcs(t)
}

// assertNoProcs checks that no process (QEMU, supervisor) of this state
// directory runs.
func (e *env) assertNoProcs(t *testing.T) {
	t.Helper()
	for _, p := range e.procs() {
		t.Errorf("process left behind: %s", p)
	}
}

func (e *env) procs() []string {
	var out []string
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(e.h.Root)) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat")); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue // exited, not yet reaped
			}
		}
		out = append(out, strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " "))
	}
	return out
}

// assertAtRest checks that a workspace at rest has no processes and no
// sockets.
func (e *env) assertAtRest(t *testing.T, name string, want State) {
	t.Helper()
	inf := e.status(t, name)
	if inf.State != want {
		t.Errorf("%s: state %s (%s), want %s", name, inf.State, inf.Reason, want)
	}
	socks, _ := filepath.Glob(filepath.Join(e.h.Path(Dir, name), wsdir.RunDir, "*.sock"))
	if len(socks) > 0 {
		t.Errorf("%s: sockets left: %v", name, socks)
	}
	e.assertNoProcs(t)
}
