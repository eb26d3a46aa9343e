package workspace

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLifecycle drives the loop through the library: create,
// start, exec (streams, exit codes, stdin, concurrency), halt, start again
// on the same disk, logs, delete; with the refusals on the way.
func TestLifecycle(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)

	inf := e.create(t, "app")
	if inf.State != Created || inf.Digest == "" || inf.Resources.DiskBytes != 256<<20 || inf.Resources.MemoryMiB != 128 {
		t.Fatalf("created: %+v", inf)
	}
	checkPerms(t, e.h.Path(Dir, "app"))
	if _, err := Create(ctx, e.h, CreateOptions{Name: "app", Image: e.ref, Agent: e.agent}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	if _, err := Exec(ctx, e.h, ExecOptions{Name: "app", Argv: []string{"true"}}); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "microagent start app") {
		t.Fatalf("exec on a created workspace: %v", err)
	}

	t0 := time.Now()
	inf = e.start(t, "app")
	t.Logf("start took %s (boot %.2fs)", time.Since(t0), inf.BootSeconds)
	if inf.SupervisorPID == 0 || inf.VMMPID == 0 {
		t.Fatalf("running without pids: %+v", inf)
	}
	if _, err := Start(ctx, e.h, StartOptions{Name: "app", Executable: e.exe}); !errors.Is(err, ErrRunning) {
		t.Fatalf("start of a running workspace: %v", err)
	}
	if err := Delete(ctx, e.h, DeleteOptions{Name: "app"}); !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("delete of a running workspace: %v", err)
	}
	if ps, err := ListRunning(ctx, e.h); err != nil || len(ps) != 1 || ps[0].Name != "app" {
		t.Fatalf("ps: %v %v", ps, err)
	}

	if code, out, errs := e.exec(t, "app", "", "sh", "-c", "echo hi > /root/f; echo out; echo err >&2; exit 3"); code != 3 || out != "out\n" || errs != "err\n" {
		t.Fatalf("exec: %d %q %q", code, out, errs)
	}
	if code, out, _ := e.exec(t, "app", "piped\n", "cat"); code != 0 || out != "piped\n" {
		t.Fatalf("exec with stdin: %d %q", code, out)
	}
	var out bytes.Buffer
	es, err := Exec(ctx, e.h, ExecOptions{Name: "app", Argv: []string{"sh", "-c", "echo $FOO; pwd"}, Env: []string{"FOO=bar"}, Cwd: "/tmp", Stdout: &out})
	if err != nil || es.Code != 0 || out.String() != "bar\n/tmp\n" {
		t.Fatalf("exec env/cwd: %+v %v %q", es, err, out.String())
	}
	es, err = Exec(ctx, e.h, ExecOptions{Name: "app", Argv: []string{"sleep", "30"}, Timeout: 300 * time.Millisecond})
	if err != nil || !es.TimedOut {
		t.Fatalf("exec timeout: %+v %v", es, err)
	}
	// An exec through the supervisor is cheap: log what it costs.
	var took []time.Duration
	for range 10 {
		t0 := time.Now()
		if code, _, _ := e.exec(t, "app", "", "true"); code != 0 {
			t.Fatal("true failed")
		}
		took = append(took, time.Since(t0))
	}
	slices.Sort(took)
	t.Logf("exec true through the supervisor: min %s, median %s", took[0], took[len(took)/2])
	// Concurrent execs are independent.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b bytes.Buffer
			es, err := Exec(ctx, e.h, ExecOptions{Name: "app", Argv: []string{"sh", "-c", "sleep 0.2; echo $0", string(rune('a' + i))}, Stdout: &b})
			if err != nil || es.Code != 0 || b.String() != string(rune('a'+i))+"\n" {
				t.Errorf("concurrent exec %d: %+v %v %q", i, es, err, b.String())
			}
		}()
	}
	wg.Wait()

	inf, err = Halt(ctx, e.h, HaltOptions{Name: "app"})
	if err != nil || inf.State != Halted || inf.Reason != "" {
		t.Fatalf("halt: %+v %v", inf, err)
	}
	e.assertAtRest(t, "app", Halted)
	if _, err := Exec(ctx, e.h, ExecOptions{Name: "app", Argv: []string{"true"}}); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "halted") {
		t.Fatalf("exec on a halted workspace: %v", err)
	}
	if inf, err := Halt(ctx, e.h, HaltOptions{Name: "app"}); err != nil || inf.State != Halted {
		t.Fatalf("halt of a halted workspace: %+v %v", inf, err)
	}

	// The same disk boots again.
	e.start(t, "app")
	if code, out, _ := e.exec(t, "app", "", "cat", "/root/f"); code != 0 || out != "hi\n" {
		t.Fatalf("after restart: %d %q", code, out)
	}
	var logs bytes.Buffer
	if err := Logs(ctx, e.h, LogsOptions{Name: "app"}, &logs); err != nil || strings.Count(logs.String(), "supervisor: running") != 2 {
		t.Fatalf("logs: %v\n%s", err, logs.String())
	}
	var console bytes.Buffer
	if err := Logs(ctx, e.h, LogsOptions{Name: "app", Console: true}, &console); err != nil || console.Len() == 0 || strings.Contains(console.String(), "supervisor:") {
		t.Fatalf("console log: %v\n%s", err, console.String())
	}
	// A follower ends when the workspace stops.
	followDone := make(chan error, 1)
	go func() {
		followDone <- Logs(ctx, e.h, LogsOptions{Name: "app", Follow: true, Supervisor: true}, &bytes.Buffer{})
	}()
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-followDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs --follow did not end after halt")
	}

	if err := Delete(ctx, e.h, DeleteOptions{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	if infos, err := List(ctx, e.h); err != nil || len(infos) != 0 {
		t.Fatalf("list after delete: %v %v", infos, err)
	}
	if ents, _ := os.ReadDir(e.h.Path(Dir)); len(ents) != 0 {
		t.Fatalf("workspaces folder not empty: %v", ents)
	}
	if _, err := Status(ctx, e.h, "app"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("status after delete: %v", err)
	}
	e.assertNoProcs(t)
}

// checkPerms checks files are 0600 and folders 0700.
func checkPerms(t *testing.T, dir string) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
}
