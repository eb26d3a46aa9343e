package workspace

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// TestJobs: a job runs on in the supervisor when the waiting client goes
// away, its output in a log that spans restarts of the job; a job cannot
// be started twice at once; a guest that prints more than the log's bound
// only fills the bound; a halt ends a running job without an exit status.
func TestJobs(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	e.create(t, "jobs")
	if _, err := StartJob(ctx, e.h, JobOptions{Name: "jobs", Job: "w", Argv: []string{"true"}}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("job in a created workspace: %v", err)
	}
	e.start(t, "jobs")

	for _, bad := range []string{"", "-x", "A", strings.Repeat("a", 41), "a/b"} {
		if _, err := StartJob(ctx, e.h, JobOptions{Name: "jobs", Job: bad, Argv: []string{"true"}}); err == nil || !strings.Contains(err.Error(), "job name") {
			t.Errorf("job name %q: %v", bad, err)
		}
	}
	if _, err := WaitJob(ctx, e.h, "jobs", "never"); !errors.Is(err, ErrNoJob) {
		t.Errorf("wait for a job never started: %v", err)
	}

	gate := "/tmp/go"
	st, err := StartJob(ctx, e.h, JobOptions{Name: "jobs", Job: "w", Env: []string{"V=env"}, Cwd: "/tmp",
		Argv: []string{"sh", "-c", "echo out $V $(pwd); echo err >&2; while [ ! -e " + gate + " ]; do sleep 0.1; done; exit 3"}})
	if err != nil || !st.Running || st.Name != "w" {
		t.Fatalf("start job: %+v %v", st, err)
	}
	if _, err := StartJob(ctx, e.h, JobOptions{Name: "jobs", Job: "w", Argv: []string{"true"}}); !errors.Is(err, ErrJobRunning) {
		t.Errorf("second start of a running job: %v", err)
	}
	if st, err := Job(ctx, e.h, "jobs", "w"); err != nil || !st.Running || st.Exit != nil {
		t.Errorf("job status while it runs: %+v %v", st, err)
	}
	// A waiter that gives up (or whose process dies) leaves the job be.
	short, cancel := context.WithTimeout(ctx, time.Second)
	_, err = WaitJob(short, e.h, "jobs", "w")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait that timed out: %v", err)
	}
	if code, _, _ := e.exec(t, "jobs", "", "touch", gate); code != 0 {
		t.Fatal("touch gate")
	}
	st, err = WaitJob(ctx, e.h, "jobs", "w")
	if err != nil || st.Running || st.Exit == nil || st.Exit.Code != 3 {
		t.Fatalf("job's end: %+v %v", st, err)
	}
	logPath, _ := JobLog(e.h, "jobs", "w")
	if b, err := os.ReadFile(logPath); err != nil || string(b) != "out env /tmp\nerr\n" {
		t.Fatalf("job log %q %v", b, err)
	}
	// Ended, it may run again; its log is appended to.
	if _, err := StartJob(ctx, e.h, JobOptions{Name: "jobs", Job: "w", Argv: []string{"echo", "again"}}); err != nil {
		t.Fatal(err)
	}
	if st, err := WaitJob(ctx, e.h, "jobs", "w"); err != nil || st.Exit == nil || st.Exit.Code != 0 {
		t.Fatalf("second run: %+v %v", st, err)
	}
	if b, _ := os.ReadFile(logPath); string(b) != "out env /tmp\nerr\nagain\n" {
		t.Fatalf("job log after a second run %q", b)
	}

	// The guest decides how much it prints; the host keeps the bound.
	if _, err := StartJob(ctx, e.h, JobOptions{Name: "jobs", Job: "flood", MaxLog: 4096,
		Argv: []string{"sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' x"}}); err != nil {
		t.Fatal(err)
	}
	if st, err := WaitJob(ctx, e.h, "jobs", "flood"); err != nil || st.Exit == nil || st.Exit.Code != 0 {
		t.Fatalf("flood: %+v %v", st, err)
	}
	flood, _ := JobLog(e.h, "jobs", "flood")
	if b, _ := os.ReadFile(flood); len(b) > 4096+100 || !strings.Contains(string(b), "log limit reached") || !strings.HasPrefix(string(b), "xxxx") {
		t.Fatalf("flooded log: %d bytes, ends %q", len(b), b[max(0, len(b)-80):])
	}

	// A halt ends a running job: its waiter hears of it.
	if _, err := StartJob(ctx, e.h, JobOptions{Name: "jobs", Job: "long", Argv: []string{"sleep", "3600"}}); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		st, err := WaitJob(ctx, e.h, "jobs", "long")
		if err == nil && st.Running {
			err = errors.New("a wait answered while the job runs")
		}
		waited <- err
	}()
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "jobs", Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		t.Logf("the waiter heard: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter of a job was not told of the halt")
	}
	e.teardown(t)
}
