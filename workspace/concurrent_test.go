package workspace

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// qemuCount counts the live QEMU processes of a workspace.
func (e *env) qemuCount(name string) int {
	n := 0
	dir := e.h.Path(Dir, name)
	for d, ids := range scanProcs(e.h) {
		if d != dir {
			continue
		}
		for _, id := range ids {
			b, _ := os.ReadFile("/proc/" + itoa(id.PID) + "/cmdline")
			argv0, _, _ := bytes.Cut(b, []byte{0})
			if strings.HasPrefix(filepath.Base(string(argv0)), "qemu") && id.Alive() {
				n++
			}
		}
	}
	return n
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestEightConcurrentLifecycleCommands runs rounds of eight lifecycle
// commands at once on one workspace, as separate processes. Each must
// succeed or be refused clearly (busy: exit 75; wrong state: exit 1 saying
// so); the workspace must never run two VMs, its files must stay valid and
// its state truthful, and its disk intact.
func TestEightConcurrentLifecycleCommands(t *testing.T) {
	e := setup(t).withCLI(t)
	const ws = "cc"
	e.create(t, ws)
	e.start(t, ws)
	if code, _, _ := e.exec(t, ws, "", "sh", "-c", "echo intact > /root/f && sync"); code != 0 {
		t.Fatal("write")
	}
	// Clear refusals a command may meet from a concurrent one.
	refusals := map[int][]string{
		75: {"busy: another command holds the lock"},
		1: {
			"workspace is running",                // start or delete of a running one
			"no such workspace",                   // after a delete
			"killed",                              // a start whose boot a concurrent kill ended
			"supervisor exited during boot",       // the same, seen by the start
			"interrupted before the VM was ready", // the same
		},
	}
	round := func(t *testing.T, cmds [][]string) {
		var maxQEMU atomic.Int32
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				if n := int32(e.qemuCount(ws)); n > maxQEMU.Load() {
					maxQEMU.Store(n)
				}
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
		var wg sync.WaitGroup
		results := make([]string, len(cmds))
		for i, args := range cmds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := e.cli(args...)
				var errb bytes.Buffer
				cmd.Stderr = &errb
				err := cmd.Run()
				code := exitCode(err)
				results[i] = strings.Join(args, " ") + ": " + itoa(code) + " " + strings.TrimSpace(errb.String())
				if code == 0 {
					return
				}
				for _, r := range refusals[code] {
					if strings.Contains(errb.String(), r) {
						return
					}
				}
				t.Errorf("%s: exit %d without a clear refusal: %s", strings.Join(args, " "), code, errb.String())
			}()
		}
		wg.Wait()
		close(stop)
		<-sampled
		for _, r := range results {
			t.Log(r)
		}
		if n := maxQEMU.Load(); n > 1 {
			t.Errorf("%d VMs ran at once on one disk", n)
		}
	}
	check := func(t *testing.T) {
		w := newWS(e.h, ws)
		if _, err := w.ReadManifest(); err != nil {
			t.Fatal(err)
		}
		r, err := w.ReadRecord()
		if err != nil {
			t.Fatal(err)
		}
		log, _ := os.ReadFile(w.SupLog())
		if n := strings.Count(string(log), "booting workspace"); n > r.Boot {
			t.Errorf("%d boots logged, %d recorded", n, r.Boot)
		}
		inf := e.status(t, ws)
		t.Logf("after the round: %s (%s)", inf.State, inf.Reason)
		switch {
		case inf.State == Running:
			if n := e.qemuCount(ws); n != 1 {
				t.Errorf("running with %d VMs", n)
			}
		case inf.State.Live():
			t.Errorf("still %s after every command returned", inf.State)
		default:
			waitFor(t, "no processes", 15*time.Second, func() bool { return len(e.procs()) == 0 })
		}
	}
	t.Run("from running", func(t *testing.T) {
		round(t, [][]string{
			{"start", ws}, {"halt", ws}, {"kill", ws}, {"start", ws},
			{"halt", ws}, {"start", ws}, {"delete", "--yes", ws}, {"gc"},
		})
		check(t)
	})
	t.Run("from rest", func(t *testing.T) {
		if _, err := Halt(testCtx(t), e.h, HaltOptions{Name: ws}); err != nil {
			t.Fatal(err)
		}
		round(t, [][]string{
			{"start", ws}, {"start", ws}, {"start", ws}, {"halt", ws},
			{"start", ws}, {"kill", ws}, {"start", ws}, {"status", ws},
		})
		check(t)
	})
	// The disk survived every round.
	if inf := e.status(t, ws); inf.State != Running {
		e.start(t, ws)
	}
	if code, out, _ := e.exec(t, ws, "", "cat", "/root/f"); code != 0 || out != "intact\n" {
		t.Fatalf("disk after the rounds: %d %q", code, out)
	}
	t.Run("with delete", func(t *testing.T) {
		round(t, [][]string{
			{"halt", ws}, {"delete", "--yes", ws}, {"delete", "--yes", "--force", ws}, {"start", ws},
			{"kill", ws}, {"delete", "--yes", "--force", ws}, {"halt", ws}, {"gc"},
		})
	})
	// Whatever won, nothing may be left but a valid workspace or nothing.
	if infos, err := List(context.Background(), e.h); err != nil || len(infos) > 1 {
		t.Fatalf("list: %v %v", infos, err)
	} else if len(infos) == 1 {
		check(t)
		if err := Delete(testCtx(t), e.h, DeleteOptions{Name: ws, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	GC(testCtx(t), e.h)
	if ents, _ := os.ReadDir(e.h.Path(Dir)); len(ents) != 0 {
		t.Fatalf("left in the workspaces folder: %v", ents)
	}
	e.assertNoProcs(t)
}
