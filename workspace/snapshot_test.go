package workspace

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
	"github.com/microagent-dev/microagent/wsdir"
)

// counterScript starts a counter in /tmp/count in the background, in its
// own session (so a restore, which ends the exec streams of the saved
// moment, has no group of a lost stream to kill), and waits for its first
// count, so the counter runs when the exec returns.
const counterScript = `setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/count; sleep 0.1; done' </dev/null >/dev/null 2>&1 & while [ ! -e /tmp/count ]; do sleep 0.05; done;`

func (e *env) count(t *testing.T, name string) int {
	t.Helper()
	code, out, errs := e.exec(t, name, "", "cat", "/tmp/count")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if code != 0 || err != nil {
		t.Fatalf("%s: read the counter: exit %d %q %q", name, code, out, errs)
	}
	return n
}

// countsOn waits (bounded) until the counter passes min: it runs.
func (e *env) countsOn(t *testing.T, name string, min int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := e.count(t, name)
		if n > min {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the counter stays at %d (want > %d)", name, n, min)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) catFile(t *testing.T, name, path string) (string, bool) {
	t.Helper()
	code, out, _ := e.exec(t, name, "", "cat", path)
	return out, code == 0
}

// secretIs checks the guest's secret file by its hash: reading the value
// back through exec would put a copy in the agent's output buffers, which
// the snapshot's leak scan would then rightly find.
func (e *env) secretIs(t *testing.T, name, value string) bool {
	t.Helper()
	code, out, _ := e.exec(t, name, "", "sha256sum", "/run/secrets/TOKEN")
	sum := sha256.Sum256([]byte(value))
	return code == 0 && strings.HasPrefix(out, hex.EncodeToString(sum[:]))
}

func secretValue(t *testing.T, prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// createWithToken creates workspace name with one secret, TOKEN, read
// from a file holding value; it returns the file.
func (e *env) createWithToken(t *testing.T, name, value string) string {
	t.Helper()
	secFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secFile, []byte(value), 0o600)
	if _, err := Create(testCtx(t), e.h, CreateOptions{Name: name, Image: e.ref, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20}, Secrets: decls(t, "TOKEN=file:"+secFile)}); err != nil {
		t.Fatal(err)
	}
	return secFile
}

// TestSnapshots is the session: pause/resume, snapshot of a running
// workspace, restore in place, a fork, with a counter process that keeps
// counting and a secret that is purged, scanned for and given back
// (rotated in between).
func TestSnapshots(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	v1 := secretValue(t, "first")
	secFile := e.createWithToken(t, "src", v1)
	// A halted (never started) workspace has no moment to capture.
	if _, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: "x"}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("snapshot of a created workspace: %v, want ErrNotRunning", err)
	}
	e.start(t, "src")
	if !e.secretIs(t, "src", v1) {
		t.Fatal("secret before: not the value")
	}
	if code, _, errs := e.exec(t, "src", "", "sh", "-c", counterScript+" echo before > /root/before"); code != 0 {
		t.Fatalf("counter: %s", errs)
	}
	n := e.countsOn(t, "src", 0)

	// Pause and resume: exec is refused while paused, the counter goes on.
	if inf, err := Pause(ctx, e.h, "src"); err != nil || inf.State != Paused {
		t.Fatalf("pause: %v %v", inf, err)
	}
	if _, err := Exec(ctx, e.h, ExecOptions{Name: "src", Argv: []string{"true"}}); err == nil || !strings.Contains(err.Error(), "paused") || !errors.Is(err, ErrPaused) {
		t.Fatalf("exec while paused: %v", err)
	}
	if inf, err := Resume(ctx, e.h, "src"); err != nil || inf.State != Running {
		t.Fatalf("resume: %v %v", inf, err)
	}
	n = e.countsOn(t, "src", n)

	// Snapshot of the running workspace: it resumes, secrets come back.
	for _, bad := range []string{"../x", ".hidden", "a/b"} {
		if _, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: bad}); !errors.Is(err, ErrInvalidTag) {
			t.Errorf("tag %q: %v, want ErrInvalidTag", bad, err)
		}
	}
	if _, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src"}); err != nil {
		t.Fatalf("snapshot with the default tag: %v", err)
	}
	// A copy of the value on the disk refuses the capture, naming the
	// secret and not the value; the workspace runs on with its secret.
	e.exec(t, "src", "", "sh", "-c", "cat /run/secrets/TOKEN > /root/leak; sync")
	_, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: "leaky"})
	if err == nil || !strings.Contains(err.Error(), "TOKEN in the disk") || strings.Contains(err.Error(), v1) {
		t.Fatalf("capture with a copy on disk: %v", err)
	}
	if s, _ := ListSnapshots(e.h, "src"); len(s) != 1 {
		t.Fatalf("the refused capture is listed: %v", s)
	}
	if !e.secretIs(t, "src", v1) {
		t.Fatal("secret after the refused capture: not the value")
	}
	// Overwritten in place (ext4 reuses the blocks), the copy is gone.
	e.exec(t, "src", "", "sh", "-c", "dd if=/dev/zero of=/root/leak bs="+strconv.Itoa(len(v1))+" count=1 conv=notrunc 2>/dev/null; sync; rm /root/leak; sync")

	snaps, _ := ListSnapshots(e.h, "src")
	if len(snaps) != 1 || !strings.HasPrefix(snaps[0].Tag, "20") {
		t.Fatalf("the default tag: %+v", snaps)
	}
	if err := DeleteSnapshot(e.h, "src", snaps[0].Tag); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	beforeSnap := e.count(t, "src")
	snap, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: "base"})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	t.Logf("snapshot create: %v, %d MiB, scan: %s", time.Since(start).Round(time.Millisecond), snap.SizeBytes>>20, snap.Scan)
	if len(snap.SecretsPurged) != 1 || !strings.Contains(snap.Scan, "no copy") {
		t.Errorf("snapshot: purged %v, scan %q", snap.SecretsPurged, snap.Scan)
	}
	// Every file of the snapshot is the user's alone (the device state
	// was 0644, QEMU's umask).
	snapFiles, _ := os.ReadDir(e.h.Path(Dir, "src", wsdir.SnapshotsDir, "base"))
	for _, f := range snapFiles {
		if fi, err := f.Info(); err != nil {
			t.Error(err)
		} else if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("snapshot file %s: mode %v", f.Name(), fi.Mode())
		}
	}
	if _, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: "base"}); err == nil {
		t.Error("a second snapshot with the same tag: no error")
	}
	atSnap := e.countsOn(t, "src", n)
	if !e.secretIs(t, "src", v1) {
		t.Fatal("secret after the snapshot: not the value")
	}
	e.exec(t, "src", "", "sh", "-c", "echo after > /root/after; sync")
	v2 := secretValue(t, "rotated")
	os.WriteFile(secFile, []byte(v2), 0o600)

	// The snapshot holds no copy of the value: the memory file and disk.
	for _, f := range []string{wsdir.SnapMemory, wsdir.SnapDisk, wsdir.SnapState} {
		b, err := os.ReadFile(filepath.Join(e.h.Path(Dir, "src"), wsdir.SnapshotsDir, "base", f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(v1)) {
			t.Errorf("snapshot %s holds the secret value", f)
		}
	}

	// Restore of a running workspace is refused, nothing changes.
	if _, err := Start(ctx, e.h, StartOptions{Name: "src", Executable: e.exe, Agent: e.agent, FromSnapshot: "base"}); !errors.Is(err, ErrRunning) {
		t.Fatalf("restore of a running workspace: %v, want ErrRunning", err)
	}

	// A fork: the snapshot's files and counter, its own name and writes.
	start = time.Now()
	if _, err := Fork(ctx, e.h, ForkOptions{Name: "fork1", Source: "src", Tag: "base"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, e.h, StartOptions{Name: "fork1", Executable: e.exe, Agent: e.agent}); err != nil {
		t.Fatalf("start the fork: %v", err)
	}
	t.Logf("fork to exec-ready: %v", time.Since(start).Round(time.Millisecond))
	// The counter goes on from the snapshot's moment: not from zero, not
	// far past the value read just after the capture.
	if c := e.countsOn(t, "fork1", 0); c < beforeSnap || c > atSnap+50 {
		t.Errorf("fork counter %d: did not continue from the snapshot (%d-%d)", c, beforeSnap, atSnap)
	}
	if _, ok := e.catFile(t, "fork1", "/root/before"); !ok {
		t.Error("fork: a file from before the snapshot is missing")
	}
	if _, ok := e.catFile(t, "fork1", "/root/after"); ok {
		t.Error("fork: a file written after the snapshot is there")
	}
	if out, _ := e.catFile(t, "fork1", "/proc/sys/kernel/hostname"); strings.TrimSpace(out) != "fork1" {
		t.Errorf("fork hostname %q", out)
	}
	if !e.secretIs(t, "fork1", v2) {
		t.Error("fork secret: not the rotated value")
	}
	e.exec(t, "fork1", "", "sh", "-c", "echo fork > /root/forkonly; sync")
	if _, ok := e.catFile(t, "src", "/root/forkonly"); ok {
		t.Error("the fork's write reached the source")
	}
	if _, err := os.Stat(e.h.Path(Dir, "fork1", wsdir.RestoreDir)); err == nil {
		t.Error("the fork's restore folder is left after its start")
	}

	// Restore in place: halted, rolled back, counting on.
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "src"}); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: "x"}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("snapshot of a halted workspace: %v, want ErrNotRunning", err)
	}
	if _, err := Start(ctx, e.h, StartOptions{Name: "src", Executable: e.exe, Agent: e.agent, FromSnapshot: "nosuch"}); !errors.Is(err, ErrSnapshotNotFound) {
		t.Fatalf("restore of a missing snapshot: %v", err)
	}
	if inf := e.status(t, "src"); inf.State != Halted {
		t.Fatalf("after refused snapshot and restore: %s", inf.State)
	}
	start = time.Now()
	if _, err := Start(ctx, e.h, StartOptions{Name: "src", Executable: e.exe, Agent: e.agent, FromSnapshot: "base"}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Logf("restore to exec-ready: %v", time.Since(start).Round(time.Millisecond))
	if c := e.countsOn(t, "src", 0); c < beforeSnap || c > atSnap+50 {
		t.Errorf("restored counter %d: did not continue from the snapshot (%d-%d)", c, beforeSnap, atSnap)
	}
	if _, ok := e.catFile(t, "src", "/root/after"); ok {
		t.Error("restore: a file written after the snapshot is still there")
	}
	if _, ok := e.catFile(t, "src", "/root/before"); !ok {
		t.Error("restore: a file from before the snapshot is missing")
	}
	if !e.secretIs(t, "src", v2) {
		t.Error("restored secret: not the rotated value")
	}

	// A paused workspace is captured in place and stays paused; its
	// secret comes back at resume.
	if _, err := Pause(ctx, e.h, "src"); err != nil {
		t.Fatal(err)
	}
	ps, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: "paused"})
	if err != nil || !ps.Paused || len(ps.SecretsPurged) != 1 {
		t.Fatalf("snapshot of a paused workspace: %+v %v", ps, err)
	}
	if inf := e.status(t, "src"); inf.State != Paused {
		t.Fatalf("after capturing a paused workspace: %s", inf.State)
	}
	if _, err := Resume(ctx, e.h, "src"); err != nil {
		t.Fatal(err)
	}
	if !e.secretIs(t, "src", v2) {
		t.Error("secret after resuming a paused capture: not the value")
	}

	// A purge reply naming what this boot never delivered (the workload,
	// root in the guest, put its own file in /run/secrets) is no account
	// of a purge: no snapshot, nothing written, the secrets given back.
	e.exec(t, "src", "", "sh", "-c", "echo x > /run/secrets/NOT_DECLARED")
	if _, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: "unpurged"}); err == nil || !strings.Contains(err.Error(), "NOT_DECLARED, which is not a secret delivered") {
		t.Fatalf("capture with an undeclared name in the purge reply: %v", err)
	}
	if _, err := os.Stat(e.h.Path(Dir, "src", wsdir.SnapshotsDir, "unpurged")); err == nil {
		t.Fatal("a snapshot was written from an unchecked purge reply")
	}
	if inf := e.status(t, "src"); inf.State != Running || inf.Reason != "" {
		t.Fatalf("after the refused capture: %s %q", inf.State, inf.Reason)
	}
	if !e.secretIs(t, "src", v2) {
		t.Error("secret after the refused capture: not given back")
	}

	// A guest that cannot confirm the purge (the workload, root in the
	// guest, mounted a file system where a secret file was: the purge
	// cannot remove it) gets no snapshot, and nothing is written. (A
	// plain directory there no longer stops the purge: it is removed.)
	e.exec(t, "src", "", "sh", "-c", "rm /run/secrets/TOKEN && mkdir /run/secrets/TOKEN && mount -t tmpfs none /run/secrets/TOKEN")
	if _, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: "unpurged"}); err == nil || !strings.Contains(err.Error(), "could not confirm") {
		t.Fatalf("capture without a confirmed purge: %v", err)
	}
	if _, err := os.Stat(e.h.Path(Dir, "src", wsdir.SnapshotsDir, "unpurged")); err == nil {
		t.Fatal("a snapshot was written without a confirmed purge")
	}
	if inf := e.status(t, "src"); inf.State != Running {
		t.Fatalf("after the refused capture: %s", inf.State)
	}

	// Delete: the snapshot goes, the fork runs on.
	if err := DeleteSnapshot(e.h, "src", "base"); err != nil {
		t.Fatal(err)
	}
	if s, _ := ListSnapshots(e.h, "src"); len(s) != 1 || s[0].Tag != "paused" {
		t.Errorf("snapshots after delete: %+v", s)
	}
	e.countsOn(t, "fork1", 0)
	for _, n := range []string{"src", "fork1"} {
		if err := Delete(ctx, e.h, DeleteOptions{Name: n, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNoProcs(t)
}

// TestSnapshotForksAtOnce forks one snapshot three times at once: each
// fork resumes the counter and has its own disk.
func TestSnapshotForksAtOnce(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	// The source may reach the host's loopback (at 10.0.2.2): the forks
	// keep that network policy.
	if _, err := Create(ctx, e.h, CreateOptions{Name: "src", Image: e.ref, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20}, Network: vmm.Network{HostAccess: true}}); err != nil {
		t.Fatal(err)
	}
	e.start(t, "src")
	e.exec(t, "src", "", "sh", "-c", counterScript+" echo base > /root/base")
	if _, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "src", Tag: "s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "src"}); err != nil {
		t.Fatal(err)
	}
	names := []string{"f1", "f2", "f3"}
	errs := make(chan error, len(names))
	start := time.Now()
	for _, n := range names {
		go func() {
			if _, err := Fork(ctx, e.h, ForkOptions{Name: n, Source: "src", Tag: "s"}); err != nil {
				errs <- err
				return
			}
			_, err := Start(ctx, e.h, StartOptions{Name: n, Executable: e.exe, Agent: e.agent})
			errs <- err
		}()
	}
	for range names {
		if err := <-errs; err != nil {
			t.Fatalf("fork: %v", err)
		}
	}
	t.Logf("three forks to exec-ready: %v", time.Since(start).Round(time.Millisecond))
	// Each fork has a working user network of its own (a new instance
	// behind the restored NIC) with the source's policy: it fetches from
	// a server on the host's loopback through 10.0.2.2.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello-fork") }))
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	url := fmt.Sprintf("http://10.0.2.2:%d/", l.Addr().(*net.TCPAddr).Port)
	for _, n := range names {
		if code, out, errs := e.exec(t, n, "", "timeout", "20", "wget", "-q", "-O", "-", url); code != 0 || out != "hello-fork" {
			t.Errorf("%s: fetch from the host after the fork: exit %d %q %q", n, code, out, errs)
		}
	}
	for _, n := range names {
		e.countsOn(t, n, 0)
		e.exec(t, n, "", "sh", "-c", "echo "+n+" > /root/own; sync")
	}
	for _, n := range names {
		if out, ok := e.catFile(t, n, "/root/own"); !ok || strings.TrimSpace(out) != n {
			t.Errorf("%s: /root/own = %q: a sibling's write reached it", n, out)
		}
		if out, _ := e.catFile(t, n, "/root/base"); strings.TrimSpace(out) != "base" {
			t.Errorf("%s: the snapshot's file: %q", n, out)
		}
	}
	// A fork's RAM is a private mapping of the snapshot: its own snapshot
	// carries the RAM in the state stream, and restores from it.
	fs, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "f1", Tag: "own"})
	if err != nil || fs.SharedRAM {
		t.Fatalf("snapshot of a fork: %+v %v", fs, err)
	}
	e.exec(t, "f1", "", "sh", "-c", "echo later > /root/own; sync")
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "f1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, e.h, StartOptions{Name: "f1", Executable: e.exe, Agent: e.agent, FromSnapshot: "own"}); err != nil {
		t.Fatalf("restore of a fork's snapshot: %v", err)
	}
	e.countsOn(t, "f1", 0)
	if out, _ := e.catFile(t, "f1", "/root/own"); strings.TrimSpace(out) != "f1" {
		t.Errorf("restored fork: /root/own = %q, want the snapshot's", out)
	}
	for _, n := range append(names, "src") {
		if err := Delete(ctx, e.h, DeleteOptions{Name: n, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNoProcs(t)
}

// TestSnapshotKilled kills the supervisor in the middle of a capture: no
// half snapshot is listed, the workspace is failed (not running), it
// starts again, and the next capture clears the leftovers.
func TestSnapshotKilled(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	e.create(t, "ws")
	sup := e.start(t, "ws").SupervisorPID

	// A capture that cannot fit is refused before anything is paused or
	// written (a real 8 MiB tmpfs as the snapshot folder).
	snapDir := e.h.Path(Dir, "ws", wsdir.SnapshotsDir)
	t.Run("no space", func(t *testing.T) {
		testenv.RequireRoot(t, "mounts a tmpfs")
		os.MkdirAll(snapDir, 0o700)
		if err := syscall.Mount("tmpfs", snapDir, "tmpfs", 0, "size=8m,mode=0700"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		_, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "ws", Tag: "big"})
		syscall.Unmount(snapDir, syscall.MNT_DETACH)
		if err == nil || !strings.Contains(err.Error(), "not enough free space") {
			t.Fatalf("capture into 8 MiB: %v", err)
		}
		if inf := e.status(t, "ws"); inf.State != Running {
			t.Fatalf("after the refused capture: %s", inf.State)
		}
		if ents, _ := os.ReadDir(snapDir); len(ents) != 0 {
			t.Fatalf("the refused capture wrote %v", ents)
		}
	})

	done := make(chan error, 1)
	go func() {
		_, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "ws", Tag: "t"})
		done <- err
	}()
	waitFor(t, "a capture in progress", 60*time.Second, func() bool {
		m, _ := filepath.Glob(filepath.Join(snapDir, wsdir.TmpPrefix+"*"))
		return len(m) > 0
	})
	if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("the killed capture reported success")
	}
	if s, err := ListSnapshots(e.h, "ws"); err != nil || len(s) != 0 {
		t.Fatalf("after the kill: %v %v", s, err)
	}
	waitFor(t, "the workspace to show as stopped", 30*time.Second, func() bool { return !e.status(t, "ws").State.Live() })
	e.start(t, "ws")
	if _, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "ws", Tag: "t"}); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(snapDir, wsdir.TmpPrefix+"*")); len(m) > 0 {
		t.Errorf("leftovers: %v", m)
	}
	if err := Delete(ctx, e.h, DeleteOptions{Name: "ws", Force: true}); err != nil {
		t.Fatal(err)
	}
	e.assertNoProcs(t)
}

// TestRestoreMismatch: a snapshot taken on another machine shape is
// refused, naming every difference, before anything changes.
func TestRestoreMismatch(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	w := newWS(h, "ws")
	if err := os.MkdirAll(w.SnapDir("t"), 0o700); err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Name: "ws", Resources: Resources{MemoryMiB: 256, CPUs: 1}}
	accel, _ := qemu.DetectAccel()
	id, err := machineIdentity(m)
	// The identity strings are what snapshots taken before backends were
	// recorded hold: they must not change.
	if err != nil || id.Accel != accel || id.Devices != "virtio-blk:2,virtio-serial:1,virtio-net:1" || (accel == "tcg" && id.CPU != "max") {
		t.Fatalf("identity %+v %v", id, err)
	}
	good := Snapshot{Tag: "t", Workspace: "ws", MemoryMiB: 256, CPUs: 1, Kernel: "/k", Initrd: "/i", SharedRAM: true}
	good.SetIdentity(id)
	good.Backend = "" // as in a snapshot from before backends were recorded
	if err := wsdir.WriteSnapshotMeta(w.SnapDir("t"), &good); err != nil {
		t.Fatal(err)
	}
	r, err := w.restoreFor("t", m, "/k", "/i")
	if err != nil || r == nil || r.Fork || !r.SharedRAM || r.Dir != w.SnapDir("t") {
		t.Fatalf("matching snapshot: %+v %v", r, err)
	}
	bad := good
	bad.MemoryMiB, bad.Kernel, bad.Accel, bad.Devices = 2048, "/old/vmlinux", "other", "virtio-blk:2"
	wsdir.WriteSnapshotMeta(w.SnapDir("t"), &bad)
	_, err = w.restoreFor("t", m, "/k", "/i")
	for _, want := range []string{"memory (MiB) 2048, now 256", "kernel /old/vmlinux, now /k", "accelerator other", "devices virtio-blk:2"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mismatch error %v: want %q", err, want)
		}
	}
	if _, err := w.restoreFor("nosuch", m, "/k", "/i"); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("missing snapshot: %v", err)
	}
	if _, err := w.restoreFor("../x", m, "/k", "/i"); !errors.Is(err, ErrInvalidTag) {
		t.Errorf("bad tag: %v", err)
	}
}

// TestRehydrateFailureIsLoud: when the secrets cannot be given back after a
// capture (their source is gone), the capture says so, status shows the
// missing secrets as a reason, a resume retries and fails loudly instead
// of reporting a running guest with an empty /run/secrets, and once the
// source is back a resume restores them and clears the reason.
func TestRehydrateFailureIsLoud(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	v := secretValue(t, "rehydrate")
	secFile := e.createWithToken(t, "rh", v)
	e.start(t, "rh")
	if !e.secretIs(t, "rh", v) {
		t.Fatal("secret after start: not the value")
	}
	os.Remove(secFile)
	_, err := CreateSnapshot(ctx, e.h, SnapshotOptions{Name: "rh", Tag: "t"})
	if err == nil || !strings.Contains(err.Error(), "saved, but") || !strings.Contains(err.Error(), "secret TOKEN") {
		t.Fatalf("capture whose rehydration fails: %v", err)
	}
	missing := func(what string) {
		t.Helper()
		inf := e.status(t, "rh")
		if inf.State != Running || !strings.Contains(inf.Reason, "secrets missing") || !strings.Contains(inf.Reason, "TOKEN") || strings.Contains(inf.Reason, v) {
			t.Fatalf("status %s: %s %q", what, inf.State, inf.Reason)
		}
		if _, ok := e.catFile(t, "rh", "/run/secrets/TOKEN"); ok {
			t.Fatalf("%s: the guest has the secret", what)
		}
	}
	missing("after the capture")
	_, err = Resume(ctx, e.h, "rh")
	if err == nil || !strings.Contains(err.Error(), "without its secrets") || !strings.Contains(err.Error(), "TOKEN") || strings.Contains(err.Error(), v) {
		t.Fatalf("resume with the source still gone: %v", err)
	}
	missing("after the failed resume")

	v2 := secretValue(t, "back")
	os.WriteFile(secFile, []byte(v2), 0o600)
	if inf, err := Resume(ctx, e.h, "rh"); err != nil || inf.State != Running || inf.Reason != "" {
		t.Fatalf("resume with the source back: %+v %v", inf, err)
	}
	if !e.secretIs(t, "rh", v2) {
		t.Fatal("secret after the resume: not the new value")
	}
	if inf := e.status(t, "rh"); inf.Reason != "" {
		t.Fatalf("status after the secrets came back: %q", inf.Reason)
	}
	if err := Delete(ctx, e.h, DeleteOptions{Name: "rh", Force: true}); err != nil {
		t.Fatal(err)
	}
	e.assertNoProcs(t)
}
