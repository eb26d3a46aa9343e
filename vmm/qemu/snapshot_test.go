package qemu

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/vmm"
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

// TestMemoryFileFork saves a running guest (RAM in a shared memfd plus
// x-ignore-shared device state), then forks it: a new QEMU maps a copy of
// the saved RAM privately with -incoming defer and resumes where the first
// stopped, without changing the copy.
func TestMemoryFileFork(t *testing.T) {
	dir := shmDir(t)
	mem := filepath.Join(dir, "guest.mem")
	state := filepath.Join(dir, "dev's state") // a quote: the exec: URI must quote it
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	fd, err := unix.MemfdCreate("test-ram", unix.MFD_CLOEXEC)
	must(t, err)
	ram := os.NewFile(uintptr(fd), "test-ram")
	defer ram.Close()
	// A user network: the fork must start with a stream netdev on a new
	// network helper (QEMU 7.2 migrates virtio-net with it).
	a := startVM(t, func(mc *MachineConfig) {
		mc.Memory = &vmm.Memory{File: ram, Shared: true}
		mc.Network = &vmm.Network{}
	})
	aNet := a.m.NetworkPID()
	if aNet == 0 {
		t.Error("the machine has no network helper")
	}
	if fi, err := ram.Stat(); err != nil || fi.Size() != 256<<20 {
		t.Fatalf("memory file: %v %v", fi, err)
	}
	a.waitSerial(t, "GUEST_READY", 60*time.Second)
	a.echo(t, "before\n")

	saveStart := time.Now()
	if err := a.m.SaveState(ctx, state); err == nil {
		t.Fatal("SaveState of a running machine: no error")
	}
	must(t, a.m.Pause(ctx))
	if p, err := a.m.Paused(ctx); err != nil || !p {
		t.Fatalf("Paused after Pause: %v %v", p, err)
	}
	must(t, a.m.SaveState(ctx, state))
	if p, _ := a.m.Paused(ctx); !p {
		t.Error("the machine runs after SaveState")
	}
	// The RAM file is copied while the guest is paused, as a snapshot does.
	f, err := os.OpenFile(mem, os.O_CREATE|os.O_WRONLY, 0o600)
	must(t, err)
	_, err = io.Copy(f, io.NewSectionReader(ram, 0, 256<<20))
	must(t, err)
	f.Close()
	must(t, a.m.Shutdown(ctx))
	t.Logf("save (stop, device state, RAM copy, quit): %v", time.Since(saveStart).Round(time.Millisecond))
	if fi, err := os.Stat(state); err != nil || fi.Size() > 1<<20 {
		t.Fatalf("device state: %v %v (want well under 1 MiB)", fi, err)
	}
	before := fileHash(t, mem)

	forkStart := time.Now()
	saved, err := os.Open(mem)
	must(t, err)
	defer saved.Close()
	if aNet != 0 {
		// The helper quits when QEMU's end of its socket closes.
		for deadline := time.Now().Add(5 * time.Second); alive(aNet); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("network helper %d still runs after its QEMU quit", aNet)
			}
		}
	}
	b := startVM(t, func(mc *MachineConfig) {
		mc.Memory, mc.Incoming = &vmm.Memory{File: saved}, true
		mc.Network = &vmm.Network{}
	})
	if b.m.NetworkPID() == 0 || b.m.NetworkPID() == aNet {
		t.Errorf("fork's network helper pid %d (source's was %d): want a new one", b.m.NetworkPID(), aNet)
	}
	var st struct{ Status string }
	must(t, b.m.QMP(ctx, "query-status", nil, &st))
	if st.Status != "inmigrate" {
		t.Errorf("status with Incoming: %q, want inmigrate", st.Status)
	}
	must(t, b.m.LoadState(ctx, state))
	must(t, b.m.Resume(ctx))
	t.Logf("fork (start, device state, cont): %v", time.Since(forkStart).Round(time.Millisecond))
	b.echo(t, "after fork\n") // the guest's agent loop carries on
	t.Logf("fork to first echo: %v", time.Since(forkStart).Round(time.Millisecond))
	must(t, b.m.Shutdown(ctx))
	if fileHash(t, mem) != before {
		t.Error("the RAM snapshot changed although the fork mapped it privately")
	}
}

// TestLoadStateErrors: a corrupt state is refused with QEMU's reason.
func TestLoadStateErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bad := filepath.Join(t.TempDir(), "state")
	must(t, os.WriteFile(bad, []byte("not a migration stream"), 0o600))
	v := startVM(t, func(mc *MachineConfig) { mc.Incoming = true })
	err := v.m.LoadState(ctx, bad)
	if err == nil {
		t.Fatal("LoadState of garbage: no error")
	}
	t.Logf("error: %v", err)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
