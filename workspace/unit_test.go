package workspace

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/proc"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/wsdir"

	"github.com/microagent-dev/microagent/home"
)

// TestCreateRefusesBadInput: bad names and a state directory too long for
// the sockets fail at create, before anything is pulled or written.
func TestCreateRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	h := home.Home{Root: t.TempDir()}
	if _, err := Create(ctx, h, CreateOptions{Name: "Bad!", Image: "x"}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
	long := home.Home{Root: filepath.Join(t.TempDir(), strings.Repeat("d", 60))}
	_, err := Create(ctx, long, CreateOptions{Name: strings.Repeat("n", 40), Image: "x"})
	if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), "UNIX socket") {
		t.Fatalf("long socket path: %v", err)
	}
	if _, err := Create(ctx, h, CreateOptions{Name: "a", Image: "x", Profile: "huge"}); err == nil || !strings.Contains(err.Error(), "unknown profile") {
		t.Fatalf("bad profile: %v", err)
	}
	if ents, _ := os.ReadDir(h.Root); len(ents) != 0 {
		t.Fatalf("bad input wrote %v", ents)
	}
	for _, f := range []func() error{
		func() error { _, err := Status(ctx, h, "nope"); return err },
		func() error { _, err := Start(ctx, h, StartOptions{Name: "nope"}); return err },
		func() error { _, err := Halt(ctx, h, HaltOptions{Name: "nope"}); return err },
		func() error { _, err := Kill(ctx, h, "nope"); return err },
		func() error { return Delete(ctx, h, DeleteOptions{Name: "nope"}) },
		func() error { _, err := Exec(ctx, h, ExecOptions{Name: "nope", Argv: []string{"x"}}); return err },
		func() error { return Logs(ctx, h, LogsOptions{Name: "nope"}, nil) },
		func() error { _, err := Wait(ctx, h, WaitOptions{Name: "nope"}); return err },
	} {
		if err := f(); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown workspace: %v", err)
		}
	}
}

// fakeWS writes a workspace folder by hand, with the given record.
func fakeWS(t *testing.T, h home.Home, name string, r *wsdir.Record) *wsDir {
	t.Helper()
	w := newWS(h, name)
	for _, d := range []string{w.Path(), w.Path(wsdir.RunDir), w.Path(wsdir.LogsDir)} {
		if err := os.MkdirAll(d, wsdir.DirPerm); err != nil {
			t.Fatal(err)
		}
	}
	m := &Manifest{Version: ManifestVersion, Name: name, Image: ImageRef{Ref: "img", Digest: "sha256:00"}, Created: time.Now()}
	if err := wsdir.WriteManifest(w.ManifestPath(), m); err != nil {
		t.Fatal(err)
	}
	if r != nil {
		if err := wsdir.WriteRecord(w.Path(wsdir.RecordFile), r); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// TestStatusTellsTheTruth: a record claiming a live state is checked
// against the processes it names.
func TestStatusTellsTheTruth(t *testing.T) {
	ctx := context.Background()
	h := home.Home{Root: t.TempDir()}
	me := proc.Self()
	dead := testenv.DeadProcess(t)
	reused := &proc.ID{PID: me.PID, Start: me.Start + 1, BootID: me.BootID} // same PID, another process
	for _, c := range []struct {
		name   string
		rec    wsdir.Record
		want   State
		reason string
	}{
		{"running-alive", wsdir.Record{State: Running, Supervisor: &me}, Running, ""},
		{"running-dead", wsdir.Record{State: Running, Supervisor: dead}, Failed, "died while running"},
		{"running-reused-pid", wsdir.Record{State: Running, Supervisor: reused}, Failed, "died while running"},
		{"halting-dead", wsdir.Record{State: Halting, Supervisor: dead}, Failed, "died while halting"},
		{"killed", wsdir.Record{State: Running, Supervisor: dead, KillRequested: true}, Halted, "killed"},
		{"starting-owner-alive", wsdir.Record{State: Starting, Owner: &me}, Starting, ""},
		{"starting-owner-dead", wsdir.Record{State: Starting, Owner: dead}, Failed, "interrupted"},
		{"starting-supervisor-dead", wsdir.Record{State: Starting, Owner: &me, Supervisor: dead}, Failed, "exited during boot"},
		{"halted-orphan", wsdir.Record{State: Halted, VMM: &me}, Halted, "still running"},
		{"created", wsdir.Record{State: Created}, Created, ""},
	} {
		fakeWS(t, h, c.name, &c.rec)
		inf, err := Status(ctx, h, c.name)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if inf.State != c.want || !strings.Contains(inf.Reason, c.reason) {
			t.Errorf("%s: %s (%q), want %s with %q", c.name, inf.State, inf.Reason, c.want, c.reason)
		}
	}
	ps, err := ListRunning(ctx, h)
	if err != nil || len(ps) != 2 {
		t.Fatalf("ps: %d %v", len(ps), err)
	}
}

func TestManifestVersionAndCorruption(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	w := fakeWS(t, h, "v", nil)
	b, _ := os.ReadFile(w.ManifestPath())
	var m map[string]any
	json.Unmarshal(b, &m)
	m["version"] = ManifestVersion + 1
	b, _ = json.Marshal(m)
	os.WriteFile(w.ManifestPath(), b, wsdir.FilePerm)
	if _, err := Status(context.Background(), h, "v"); err == nil || !strings.Contains(err.Error(), "upgrade microagent") {
		t.Fatalf("newer manifest: %v", err)
	}
	os.WriteFile(w.ManifestPath(), []byte("{trunc"), wsdir.FilePerm)
	if _, err := Status(context.Background(), h, "v"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt manifest: %v", err)
	}
}

// TestLock: a second lifecycle command is refused with ErrBusy naming the
// holder; a workspace deleted while a command waited is not found.
func TestLock(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	w := fakeWS(t, h, "l", &wsdir.Record{State: Halted})
	l, err := w.Lock("start")
	if err != nil {
		t.Fatal(err)
	}
	if op, held := wsdir.LockHeld(w.Path(wsdir.LockFile)); !held || op != "start" {
		t.Fatalf("lockHeld: %q %v", op, held)
	}
	_, err = w.Lock("halt")
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "(start, pid ") {
		t.Fatalf("second lock: %v", err)
	}
	// Lifecycle functions refuse; Status does not need the lock.
	if _, err := Halt(context.Background(), h, HaltOptions{Name: "l"}); !errors.Is(err, ErrBusy) {
		t.Fatalf("halt while locked: %v", err)
	}
	if err := Delete(context.Background(), h, DeleteOptions{Name: "l"}); !errors.Is(err, ErrBusy) {
		t.Fatalf("delete while locked: %v", err)
	}
	if _, err := Status(context.Background(), h, "l"); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	if _, held := wsdir.LockHeld(w.Path(wsdir.LockFile)); held {
		t.Fatal("lock still shown held")
	}
	// Opened before a delete renamed the folder away, locked after.
	f, err := os.OpenFile(w.Path(wsdir.LockFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	l, err = w.Lock("delete")
	if err != nil {
		t.Fatal(err)
	}
	os.Rename(w.Path(), w.Path()+".gone")
	l.Unlock()
	if _, err := wsdir.TryLock(filepath.Join(w.Path()+".gone", wsdir.LockFile), "l", "x"); err != nil {
		t.Fatalf("lock in the renamed folder: %v", err)
	}
	if _, err := w.Lock("start"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lock after delete: %v", err)
	}
}

// TestGCLeftovers: leftovers of interrupted creates and deletes go, a
// create in progress (its lock held) stays, a dead supervisor's record is
// corrected and its stale socket removed.
func TestGCLeftovers(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	base := h.Path(Dir)
	for _, d := range []string{".tmp-a-1", ".trash-b-2", ".tmp-busy-3"} {
		os.MkdirAll(filepath.Join(base, d, "run"), wsdir.DirPerm)
	}
	busy, err := wsdir.TryLock(filepath.Join(base, ".tmp-busy-3", wsdir.LockFile), "busy", "create")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Unlock()
	w := fakeWS(t, h, "crashed", &wsdir.Record{State: Running, Supervisor: testenv.DeadProcess(t)})
	os.WriteFile(w.SockPath(), nil, wsdir.FilePerm)
	os.WriteFile(filepath.Join(w.Path(), ".tmp-state.json-123"), nil, wsdir.FilePerm)
	rep, err := GC(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Removed, ",") != ".tmp-a-1,.trash-b-2" || strings.Join(rep.Repaired, ",") != "crashed" {
		t.Fatalf("gc: %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(base, ".tmp-busy-3")); err != nil {
		t.Fatal("gc removed a create in progress")
	}
	r, _ := w.ReadRecord()
	if r.State != Failed || !strings.Contains(r.Reason, "died") || r.Stopped.IsZero() {
		t.Fatalf("record after gc: %+v", r)
	}
	if left, _ := filepath.Glob(filepath.Join(w.Path(), "*", "*.sock")); len(left) > 0 {
		t.Fatalf("sockets left: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(w.Path(), ".tmp-*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if rep, _ := GC(context.Background(), h); len(rep.Repaired)+len(rep.Removed) != 0 {
		t.Fatalf("second gc still repairs: %+v", rep)
	}
}

// TestStartRefusesMoreThanTheHost: a workspace with more CPUs or memory than
// this host has is refused before anything boots, its record unchanged.
func TestStartRefusesMoreThanTheHost(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	for _, r := range []Resources{
		{MemoryMiB: 128, CPUs: runtime.NumCPU() + 1, DiskBytes: 64 << 20},
		{MemoryMiB: 1 << 30, CPUs: 1, DiskBytes: 64 << 20}, // 1 PiB
	} {
		w := fakeWS(t, h, "big", nil)
		m, _ := w.ReadManifest()
		m.Resources = r
		if err := wsdir.WriteManifest(w.ManifestPath(), m); err != nil {
			t.Fatal(err)
		}
		_, err := Start(context.Background(), h, StartOptions{Name: "big"})
		if err == nil || !strings.Contains(err.Error(), "too large for this host") || !strings.Contains(err.Error(), "not booted") {
			t.Fatalf("start of %+v: %v", r, err)
		}
		t.Log(err)
		if rec, _ := w.ReadRecord(); rec.State != Created || rec.Boot != 0 {
			t.Fatalf("the refused start changed the record: %+v", rec)
		}
	}
}
