package workspace

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/wsdir"
)

// TestCopyFiftyMiBBothWays copies a 50 MiB random file into a running
// workspace and back, checking it byte for byte on both sides.
func TestCopyFiftyMiBBothWays(t *testing.T) {
	e := setup(t)
	e.create(t, "cp")
	e.start(t, "cp")
	dir := t.TempDir()
	src := filepath.Join(dir, "big.bin")
	data := make([]byte, 50<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o640); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])

	t0 := time.Now()
	st, err := CopyToGuest(testCtx(t), e.h, CopyInOptions{Name: "cp", Path: "/data/big.bin", MkdirParents: true}, src)
	if err != nil {
		t.Fatal(err)
	}
	in := time.Since(t0)
	if st.Files != 1 || st.Bytes != 50<<20 {
		t.Errorf("copy in stats %+v", st)
	}
	code, out, _ := e.exec(t, "cp", "", "sh", "-c", "sha256sum /data/big.bin; stat -c %a /data/big.bin")
	if code != 0 || !strings.HasPrefix(out, want) || !strings.HasSuffix(out, "\n640\n") {
		t.Fatalf("in the guest: %d %q, want %s and mode 640", code, out, want)
	}

	back := filepath.Join(dir, "back.bin")
	t0 = time.Now()
	if _, err := CopyFromGuest(testCtx(t), e.h, "cp", "/data/big.bin", back); err != nil {
		t.Fatal(err)
	}
	outT := time.Since(t0)
	got, _ := os.ReadFile(back)
	if gs := sha256.Sum256(got); gs != sum {
		t.Fatalf("copied back %d bytes with another sha256", len(got))
	}
	t.Logf("50 MiB: in %s (%.1f MiB/s), out %s (%.1f MiB/s)", in.Round(time.Millisecond), 50/in.Seconds(),
		outT.Round(time.Millisecond), 50/outT.Seconds())
}

// TestCopyTreeKeepsMetadata copies a tree with symlinks, modes, an empty
// directory, a hard link and owners in, changes owners in the guest, and
// copies it back out.
func TestCopyTreeKeepsMetadata(t *testing.T) {
	e := setup(t)
	e.create(t, "tree")
	e.start(t, "tree")
	src := filepath.Join(t.TempDir(), "proj")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "bin"), 0o750))
	must(os.MkdirAll(filepath.Join(src, "empty"), 0o705))
	must(os.WriteFile(filepath.Join(src, "README"), []byte("readme\n"), 0o644))
	must(os.WriteFile(filepath.Join(src, "bin", "tool"), []byte("#!/bin/sh\necho tool\n"), 0o755))
	must(syscall.Chmod(filepath.Join(src, "bin", "tool"), 0o2755)) // os.Chmod would drop the raw setgid bit
	must(os.WriteFile(filepath.Join(src, "secret"), []byte("s"), 0o600))
	must(os.Symlink("../README", filepath.Join(src, "bin", "readme-link")))
	must(os.Symlink("/etc/hostname", filepath.Join(src, "abs-link")))
	must(os.Link(filepath.Join(src, "README"), filepath.Join(src, "hard")))
	root := os.Geteuid() == 0
	if root {
		must(os.Lchown(filepath.Join(src, "secret"), 4321, 8765))
	}
	mt := time.Date(2021, 6, 7, 8, 9, 10, 0, time.UTC)
	for _, p := range []string{"README", "bin/tool", "empty", "bin", "secret"} {
		must(os.Chtimes(filepath.Join(src, p), mt, mt))
	}

	if _, err := CopyToGuest(testCtx(t), e.h, CopyInOptions{Name: "tree", Path: "/work/proj", MkdirParents: true}, src); err != nil {
		t.Fatal(err)
	}
	script := `cd /work/proj && stat -c '%n %a %u:%g %Y' README bin bin/tool empty secret && readlink bin/readme-link && readlink abs-link && cat bin/readme-link && ls -i README hard | awk '{print $1}' | uniq | wc -l`
	code, out, errs := e.exec(t, "tree", "", "sh", "-c", script)
	wantOwner := "0:0"
	if root {
		wantOwner = "4321:8765"
	}
	ts := "1623053350"
	want := strings.Join([]string{
		"README 644 0:0 " + ts, "bin 750 0:0 " + ts, "bin/tool 2755 0:0 " + ts, "empty 705 0:0 " + ts,
		"secret 600 " + wantOwner + " " + ts, "../README", "/etc/hostname", "readme", "1", ""}, "\n")
	if !root {
		// Copied from a non-root host, files carry the host user's ids.
		want = out
	}
	if code != 0 || out != want {
		t.Fatalf("in the guest (%d, %s):\n%s\nwant:\n%s", code, errs, out, want)
	}

	// Owners changed in the guest come back with -a (when we are root),
	// and the tree comes back as it went in, less its setgid bit: a copy
	// out never brings setuid, setgid or sticky bits to the host.
	if c, _, errs := e.exec(t, "tree", "", "chown", "-h", "1000:1001", "/work/proj/bin/tool", "/work/proj/bin/readme-link"); c != 0 {
		t.Fatal(errs)
	}
	if c, _, errs := e.exec(t, "tree", "", "chmod", "2755", "/work/proj/bin/tool"); c != 0 {
		t.Fatal(errs)
	}
	back := filepath.Join(t.TempDir(), "back")
	st, err := CopyFromGuestArchive(testCtx(t), e.h, "tree", "/work/proj", back)
	if err != nil {
		t.Fatal(err)
	}
	if st.Dirs != 3 || st.Symlinks != 2 || st.Files != 4 {
		t.Errorf("copy out stats %+v", st)
	}
	for _, p := range []string{"README", "bin", "bin/tool", "empty", "secret", "bin/readme-link", "abs-link"} {
		a, _ := os.Lstat(filepath.Join(src, p))
		b, err := os.Lstat(filepath.Join(back, p))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if want := a.Mode() &^ (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); b.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, b.Mode(), want)
		}
		if a.Mode()&fs.ModeSymlink == 0 && !a.ModTime().Equal(b.ModTime()) {
			t.Errorf("%s: mtime %v, want %v", p, b.ModTime(), a.ModTime())
		}
	}
	if l, _ := os.Readlink(filepath.Join(back, "abs-link")); l != "/etc/hostname" {
		t.Errorf("abs-link -> %q", l)
	}
	if root {
		for p, want := range map[string]uint32{"bin/tool": 1000, "bin/readme-link": 1000, "secret": 4321, "README": 0} {
			fi, _ := os.Lstat(filepath.Join(back, p))
			if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != want {
				t.Errorf("%s: uid %d, want %d", p, uid, want)
			}
		}
	}
	a, _ := os.Stat(filepath.Join(back, "README"))
	b, _ := os.Stat(filepath.Join(back, "hard"))
	if !os.SameFile(a, b) {
		t.Error("hard link not kept")
	}

	// Contents only ("/."), into an existing directory, and a tar stream.
	if _, err := CopyToGuest(testCtx(t), e.h, CopyInOptions{Name: "tree", Path: "/work/flat"}, src+"/."); err != nil {
		t.Fatal(err)
	}
	var tarball bytes.Buffer
	if _, err := CopyOut(testCtx(t), e.h, "tree", "/work/flat/bin", &tarball); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyIn(testCtx(t), e.h, CopyInOptions{Name: "tree", Path: "/work", Into: true}, &tarball); err != nil {
		t.Fatal(err)
	}
	if c, out, _ := e.exec(t, "tree", "", "sh", "-c", "cat /work/flat/README /work/bin/tool"); c != 0 || out != "readme\n#!/bin/sh\necho tool\n" {
		t.Fatalf("contents-only copy and tar stream: %d %q", c, out)
	}
}

// TestCopyRefusals checks every bad input: clear errors, nothing changed.
func TestCopyRefusals(t *testing.T) {
	e := setup(t)
	e.create(t, "ref")
	hostDir := t.TempDir()
	f := filepath.Join(hostDir, "f")
	os.WriteFile(f, []byte("x"), 0o644)

	// Halted (created, never started): refused, saying to start it.
	_, err := CopyToGuest(testCtx(t), e.h, CopyInOptions{Name: "ref", Path: "/f"}, f)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), `microagent start ref`) {
		t.Fatalf("not running: %v", err)
	}
	_, err = CopyFromGuest(testCtx(t), e.h, "ref", "/etc/hostname", filepath.Join(hostDir, "h"))
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("not running, copy out: %v", err)
	}
	if _, err := CopyToGuest(testCtx(t), e.h, CopyInOptions{Name: "nope", Path: "/f"}, f); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown workspace: %v", err)
	}
	e.start(t, "ref")
	if c, _, _ := e.exec(t, "ref", "", "sh", "-c", "mkdir -p /srv && echo x > /srv/file"); c != 0 {
		t.Fatal("prepare the guest")
	}
	if _, err := CopyToGuest(testCtx(t), e.h, CopyInOptions{Name: "ref", Path: "rel/f"}, f); !errors.Is(err, ErrCopyPath) {
		t.Fatalf("relative guest path: %v", err)
	}
	if _, err := CopyFromGuest(testCtx(t), e.h, "ref", "srv/file", hostDir); !errors.Is(err, ErrCopyPath) {
		t.Fatalf("relative guest source: %v", err)
	}
	if _, err := CopyToGuest(testCtx(t), e.h, CopyInOptions{Name: "ref", Path: "/f"}, filepath.Join(hostDir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing host source: %v", err)
	}
	// What failed in the guest keeps its kind on the host (package errcode).
	if _, err := CopyFromGuest(testCtx(t), e.h, "ref", "/no/such", filepath.Join(hostDir, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("copy out of a missing guest path: %v does not match fs.ErrNotExist", err)
	}
	for _, c := range []struct{ src, dst, msg string }{
		{"/no/such", filepath.Join(hostDir, "x"), "no such file"},
		{"/srv", filepath.Join(hostDir, "f"), "cannot copy a directory onto the file"},
		{"/srv/file", filepath.Join(hostDir, "no", "x"), "parent directory"},
	} {
		if _, err := CopyFromGuest(testCtx(t), e.h, "ref", c.src, c.dst); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("copy out %s -> %s: got %v, want %q", c.src, c.dst, err, c.msg)
		}
	}
	if ents, _ := os.ReadDir(hostDir); len(ents) != 1 {
		t.Errorf("a refused copy changed the host directory: %v", ents)
	}
	for _, c := range []struct{ dst, msg string }{
		{"/srv/file/x", "not a directory"},
		{"/no/such/dir/f", "parent directory"},
	} {
		if _, err := CopyToGuest(testCtx(t), e.h, CopyInOptions{Name: "ref", Path: c.dst}, f); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("copy in -> %s: got %v, want %q", c.dst, err, c.msg)
		}
	}
	// A hostile archive is refused in the guest too.
	var evil bytes.Buffer
	evil.Write(hostileTar(t))
	if _, err := CopyIn(testCtx(t), e.h, CopyInOptions{Name: "ref", Path: "/tmp", Into: true}, &evil); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("hostile archive: %v", err)
	}
	if c, out, _ := e.exec(t, "ref", "", "sh", "-c", "ls /escaped /f /no 2>&1 | grep -c 'No such'"); c != 0 || out != "3\n" {
		t.Errorf("a refused copy changed the guest: %q", out)
	}
	// The workspace still works after all that.
	if c, _, _ := e.exec(t, "ref", "", "true"); c != 0 {
		t.Fatal("workspace broken after refusals")
	}
}

// hostileTar is an archive whose entry climbs out of the destination.
func hostileTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "../../../../escaped", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("x"))
	tw.Close()
	return buf.Bytes()
}

// TestCreateFilesFailedDeliveryIsKept checks that a --file the first start
// cannot put in fails that start, naming the file, and stays pending.
func TestCreateFilesFailedDeliveryIsKept(t *testing.T) {
	e := setup(t)
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, []byte("x"), 0o644)
	specs := []tarcopy.FileSpec{{Host: f, Guest: "/bin/sh/x"}}
	if _, err := Create(testCtx(t), e.h, CreateOptions{Name: "bad", Image: e.ref, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20}, Files: specs}); err != nil {
		t.Fatal(err)
	}
	_, err := Start(testCtx(t), e.h, StartOptions{Name: "bad", Executable: e.exe, Agent: e.agent})
	if err == nil || !strings.Contains(err.Error(), "--file "+f+":/bin/sh/x") || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("start: %v", err)
	}
	e.assertAtRest(t, "bad", Failed)
	if _, err := os.Stat(filepath.Join(e.h.Path(Dir, "bad"), wsdir.FilesDir, "0.tar")); err != nil {
		t.Fatalf("the pending file was forgotten after a failed delivery: %v", err)
	}
	// A missing host file creates nothing.
	_, err = Create(testCtx(t), e.h, CreateOptions{Name: "missing", Image: e.ref, Agent: e.agent,
		Files: []tarcopy.FileSpec{{Host: f + ".nope", Guest: "/x"}}})
	if !errors.Is(err, tarcopy.ErrFileSpec) {
		t.Fatalf("missing host file: %v", err)
	}
	if _, err := os.Stat(e.h.Path(Dir, "missing")); !os.IsNotExist(err) {
		t.Fatalf("a refused create left a folder: %v", err)
	}
}

// TestCreateFilesSurviveKill: files given at create are on the guest's
// disk once start returns, even if the VM is then killed without a sync,
// and they are not put in again by a later start.
func TestCreateFilesSurviveKill(t *testing.T) {
	e := setup(t)
	f := filepath.Join(t.TempDir(), "conf")
	os.WriteFile(f, []byte("v1"), 0o644)
	if _, err := Create(testCtx(t), e.h, CreateOptions{Name: "k", Image: e.ref, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20}, Files: []tarcopy.FileSpec{{Host: f, Guest: "/etc/app/conf", Mode: 0o600, SetMode: true}}}); err != nil {
		t.Fatal(err)
	}
	e.start(t, "k")
	if _, err := Kill(testCtx(t), e.h, "k"); err != nil {
		t.Fatal(err)
	}
	e.start(t, "k")
	if c, out, _ := e.exec(t, "k", "", "sh", "-c", "stat -c %a /etc/app/conf; cat /etc/app/conf"); c != 0 || out != "600\nv1" {
		t.Fatalf("after kill and start: %d %q", c, out)
	}
	if _, err := os.Stat(filepath.Join(e.h.Path(Dir, "k"), wsdir.FilesDir)); !os.IsNotExist(err) {
		t.Fatalf("delivered files not forgotten: %v", err)
	}
}
