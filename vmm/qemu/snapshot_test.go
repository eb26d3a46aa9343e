package qemu

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// shmDir is a private directory on tmpfs when there is one: guest RAM in a
// file on disk would be written back to it.
func shmDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/dev/shm", "microagent-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// waitMigration waits for a MIGRATION event with a final status.
func waitMigration(t *testing.T, events <-chan Event, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("QMP closed while migrating")
			}
			if ev.Event != "MIGRATION" {
				continue
			}
			switch ev.Data["status"] {
			case "completed":
				return
			case "failed", "cancelled":
				t.Fatalf("migration %v", ev.Data["status"])
			}
		case <-deadline:
			t.Fatalf("migration not completed after %v", timeout)
		}
	}
}

var ignoreShared = map[string]any{"capabilities": []map[string]any{
	{"capability": "x-ignore-shared", "state": true},
	{"capability": "events", "state": true},
}}

// TestMemoryFileFork saves a running guest (RAM in a shared file plus
// x-ignore-shared device state), then forks it: a new QEMU maps the saved
// RAM privately with -incoming defer and resumes where the first stopped.
func TestMemoryFileFork(t *testing.T) {
	dir := shmDir(t)
	mem := filepath.Join(dir, "guest.mem")
	state := filepath.Join(dir, "dev.state")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a := startVM(t, func(mc *MachineConfig) { mc.MemoryFile, mc.Share = mem, true })
	if fi, err := os.Stat(mem); err != nil || fi.Size() != 256<<20 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("memory file: %v %v", fi, err)
	}
	a.waitSerial(t, "GUEST_READY", 60*time.Second)
	a.echo(t, "before\n")

	saveStart := time.Now()
	events, stop := a.m.Events()
	defer stop()
	must(t, a.m.QMP(ctx, "migrate-set-capabilities", ignoreShared, nil))
	must(t, a.m.QMP(ctx, "stop", nil, nil))
	must(t, a.m.QMP(ctx, "migrate", map[string]string{"uri": "exec:cat > " + state}, nil))
	waitMigration(t, events, 30*time.Second)
	must(t, a.m.Shutdown(ctx))
	t.Logf("save (stop, device state, quit): %v", time.Since(saveStart).Round(time.Millisecond))
	if fi, err := os.Stat(state); err != nil || fi.Size() > 1<<20 {
		t.Fatalf("device state: %v %v (want well under 1 MiB)", fi, err)
	}
	before := fileHash(t, mem)

	forkStart := time.Now()
	b := startVM(t, func(mc *MachineConfig) { mc.MemoryFile, mc.Share, mc.Incoming = mem, false, true })
	var st struct{ Status string }
	must(t, b.m.QMP(ctx, "query-status", nil, &st))
	if st.Status != "inmigrate" {
		t.Errorf("status with Incoming: %q, want inmigrate", st.Status)
	}
	events, stop = b.m.Events()
	defer stop()
	must(t, b.m.QMP(ctx, "migrate-set-capabilities", ignoreShared, nil))
	must(t, b.m.QMP(ctx, "migrate-incoming", map[string]string{"uri": "exec:cat " + state}, nil))
	waitMigration(t, events, 30*time.Second)
	must(t, b.m.QMP(ctx, "cont", nil, nil))
	t.Logf("fork (start, device state, cont): %v", time.Since(forkStart).Round(time.Millisecond))
	b.echo(t, "after fork\n") // the guest's agent loop carries on
	t.Logf("fork to first echo: %v", time.Since(forkStart).Round(time.Millisecond))
	must(t, b.m.Shutdown(ctx))
	if fileHash(t, mem) != before {
		t.Error("the RAM snapshot changed although the fork mapped it privately")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
