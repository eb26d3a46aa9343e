package kernel

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/internal/testenv"
)

// pinnedVmlinuxSHA256 is the SHA-256 of the vmlinux that `lz4 -dc` extracts
// from the pinned package's bzImage payload (53,243,444 bytes).
const pinnedVmlinuxSHA256 = "b2b9d602a316b2dbd4870911aa07d40bf0b3f59c4d0147c7bc7e18c049a01fab"

func TestInstallDefault(t *testing.T) {
	h, k := sharedKernel(t)
	t.Logf("install took %s", sharedTook)

	if k.Name != DefaultName || k.Package != DefaultPackage || k.Version != DefaultVersion || k.DebSHA256 != DefaultDebSHA256 {
		t.Errorf("record = %+v, want the pinned package", k)
	}
	if k.Release != strings.TrimPrefix(DefaultPackage, "linux-image-") {
		t.Errorf("release = %q", k.Release)
	}
	if k.Source != "apt:"+DefaultPackage+"="+DefaultVersion {
		t.Errorf("source = %q", k.Source)
	}
	if want := h.Path(home.KernelsDir, DefaultName); k.Dir != want || k.Vmlinux != filepath.Join(want, "vmlinux") {
		t.Errorf("dir %q vmlinux %q, want under %q", k.Dir, k.Vmlinux, want)
	}

	// vmlinux is an x86-64 ELF with the PVH entry note QEMU needs.
	ef, err := elf.Open(k.Vmlinux)
	if err != nil {
		t.Fatalf("vmlinux is not ELF: %v", err)
	}
	if ef.Machine != elf.EM_X86_64 {
		t.Errorf("machine = %v", ef.Machine)
	}
	ef.Close()
	entry, err := pvhEntry(k.Vmlinux)
	if err != nil || entry == 0 {
		t.Errorf("PVH entry = %#x, %v", entry, err)
	}
	if sum, _ := fsutil.SHA256File(k.Vmlinux); sum != k.VmlinuxSHA256 {
		t.Errorf("vmlinux hash %s, recorded %s", sum, k.VmlinuxSHA256)
	}
	// The same bytes as `lz4 -dc` gives for the payload of the pinned package.
	if k.VmlinuxSHA256 != pinnedVmlinuxSHA256 {
		t.Errorf("vmlinux SHA-256 %s, want %s (lz4 CLI)", k.VmlinuxSHA256, pinnedVmlinuxSHA256)
	}

	// Exactly the guest modules and their dependencies, dependencies first.
	var names []string
	pos := map[string]int{}
	for i, m := range k.Modules {
		names = append(names, m.Name)
		pos[m.Name] = i
		if m.File != filepath.Join("modules", m.Name+".ko") {
			t.Errorf("module %s file %q", m.Name, m.File)
		}
		if sum, _ := fsutil.SHA256File(k.ModulePath(m)); sum != m.SHA256 {
			t.Errorf("module %s hash %s, recorded %s", m.Name, sum, m.SHA256)
		}
	}
	want := []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console", "failover", "net_failover", "virtio_net", "overlay"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("modules = %v, want %v", names, want)
	}
	for _, m := range k.Modules {
		data, err := os.ReadFile(k.ModulePath(m))
		if err != nil {
			t.Fatal(err)
		}
		_, deps, err := modinfo(k.ModulePath(m), data)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range deps {
			if p, ok := pos[d]; !ok || p > pos[m.Name] {
				t.Errorf("module %s depends on %s, which is not loaded before it", m.Name, d)
			}
		}
	}

	// kernel.json round-trips; files 0600, folder 0700; nothing else kept.
	back, err := Load(h, DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, k) {
		t.Errorf("Load = %+v\nwant %+v", back, k)
	}
	if !back.InstalledAt.Equal(k.InstalledAt) || k.InstalledAt.IsZero() {
		t.Errorf("installed at %v / %v", back.InstalledAt, k.InstalledAt)
	}
	if fi, err := os.Stat(filepath.Join(k.Dir, RecordFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kernel.json: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(k.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("kernel dir: %v %v", fi.Mode(), err)
	}
	var total int64
	filepath.Walk(k.Dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			total += fi.Size()
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v", p, fi.Mode())
			}
		}
		return nil
	})
	t.Logf("kernel folder: %.1f MB", float64(total)/1e6)
	if total > 60<<20 {
		t.Errorf("kernel folder holds %d bytes; expected vmlinux and a few modules", total)
	}
	entries, _ := os.ReadDir(h.Path(home.KernelsDir))
	for _, e := range entries {
		if e.Name() != DefaultName && e.Name() != ".lock-"+DefaultName {
			t.Errorf("leftover %s in kernels dir", e.Name())
		}
	}

	if err := k.Verify(); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if d, err := Default(h); err != nil || d.VmlinuxSHA256 != k.VmlinuxSHA256 {
		t.Errorf("Default = %v, %v", d, err)
	}
	if l, err := List(h); err != nil || len(l) != 1 || l[0].Name != DefaultName {
		t.Errorf("List = %v, %v", l, err)
	}

	// A second install without --force keeps the installed one.
	again, err := Install(context.Background(), h, InstallOptions{Stderr: testLog{t}})
	if err != nil || !again.InstalledAt.Equal(k.InstalledAt) {
		t.Errorf("second install = %v, %v; want the existing one", again, err)
	}
	if e, err := EnsureDefault(context.Background(), h, nil); err != nil || !e.InstalledAt.Equal(k.InstalledAt) {
		t.Errorf("EnsureDefault = %v, %v", e, err)
	}
}

func TestVerifyDetectsChanges(t *testing.T) {
	sh, _ := sharedKernel(t)
	h := copyHome(t, sh, DefaultName)
	k, err := Load(h, DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Verify(); err != nil {
		t.Fatalf("Verify on a clean copy: %v", err)
	}

	flipByte(t, k.Vmlinux, 4096)
	err = k.Verify()
	if err == nil || !strings.Contains(err.Error(), k.Vmlinux) || !strings.Contains(err.Error(), `microagent kernel install --force`) {
		t.Errorf("Verify after changing vmlinux = %v; want an error naming it and the fix", err)
	}
	flipByte(t, k.Vmlinux, 4096)
	if err := k.Verify(); err != nil {
		t.Errorf("Verify after restoring vmlinux: %v", err)
	}

	mod := k.ModulePath(k.Modules[len(k.Modules)-1])
	flipByte(t, mod, 100)
	err = k.Verify()
	if err == nil || !strings.Contains(err.Error(), mod) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("Verify after changing %s = %v", mod, err)
	}
	flipByte(t, mod, 100)

	if err := os.Remove(k.ModulePath(k.Modules[0])); err != nil {
		t.Fatal(err)
	}
	err = k.Verify()
	if err == nil || !strings.Contains(err.Error(), k.ModulePath(k.Modules[0])) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("Verify with a missing module = %v", err)
	}
}

func TestVerifyStamp(t *testing.T) {
	sh, _ := sharedKernel(t)
	h := copyHome(t, sh, DefaultName)
	k, err := Load(h, DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	stamp := filepath.Join(k.Dir, StampFile)
	files := int64(1 + len(k.Modules))

	// Files written just now are "racy": hashed in full and not stamped.
	// (Touched now: the copy above may take longer than the margin on a
	// loaded host.)
	now := time.Now()
	os.Chtimes(k.Vmlinux, now, now)
	for _, m := range k.Modules {
		os.Chtimes(k.ModulePath(m), now, now)
	}
	before := fullHashes.Load()
	if err := k.Verify(); err != nil {
		t.Fatal(err)
	}
	if got := fullHashes.Load() - before; got != files {
		t.Errorf("fresh files: %d full hashes, want %d", got, files)
	}
	if _, err := os.Stat(stamp); err == nil {
		t.Errorf("stamp written for files changed within the racy margin")
	}

	// Once the files are older than the margin, the first Verify stamps
	// them and later ones only stat.
	old := racyMargin
	racyMargin = 20 * time.Millisecond
	t.Cleanup(func() { racyMargin = old })
	waitUntil(t, time.Now().Add(2*racyMargin))
	start := time.Now()
	if err := k.Verify(); err != nil {
		t.Fatal(err)
	}
	t.Logf("full verify: %s", time.Since(start))
	if fi, err := os.Stat(stamp); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stamp: %v %v", fi, err)
	}
	before = fullHashes.Load()
	start = time.Now()
	if err := k.Verify(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stamped verify: %s", time.Since(start))
	if got := fullHashes.Load() - before; got != 0 {
		t.Errorf("stamped verify hashed %d files, want 0", got)
	}

	// A change after stamping is caught (ctime moves), and so is a damaged stamp.
	flipByte(t, k.Vmlinux, 1<<20)
	if err := k.Verify(); err == nil || !strings.Contains(err.Error(), "vmlinux") {
		t.Errorf("Verify after a change under a stamp = %v", err)
	}
	flipByte(t, k.Vmlinux, 1<<20)
	if err := os.WriteFile(stamp, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	before = fullHashes.Load()
	if err := k.Verify(); err != nil {
		t.Errorf("Verify with a damaged stamp: %v", err)
	}
	if got := fullHashes.Load() - before; got != files {
		t.Errorf("damaged stamp: %d full hashes, want %d", got, files)
	}
}

// waitUntil blocks until the wall clock passes deadline (a bounded poll on
// the clock itself, which is what the racy-margin rule reads).
func waitUntil(t *testing.T, deadline time.Time) {
	t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	<-timer.C
}

func TestForceReinstallFromDeb(t *testing.T) {
	sh, k0 := sharedKernel(t)
	h := copyHome(t, sh, DefaultName)
	deb := filepath.Join(testenv.CacheDir(), DefaultDebSHA256+".deb")
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("cached deb missing after install: %v", err)
	}
	// Leave debris as a killed install would; the next install removes it.
	debris := h.Path(home.KernelsDir, ".install-default-123")
	if err := os.MkdirAll(filepath.Join(debris, "root"), 0o700); err != nil {
		t.Fatal(err)
	}
	oldRecord, _ := os.ReadFile(h.Path(home.KernelsDir, DefaultName, RecordFile))

	k, err := Install(context.Background(), h, InstallOptions{Deb: deb, Force: true, Stderr: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	if k.Source != "deb:"+deb || k.Version != DefaultVersion || k.DebSHA256 != DefaultDebSHA256 || k.VmlinuxSHA256 != k0.VmlinuxSHA256 {
		t.Errorf("reinstalled = %+v", k)
	}
	if newRecord, _ := os.ReadFile(h.Path(home.KernelsDir, DefaultName, RecordFile)); string(newRecord) == string(oldRecord) {
		t.Errorf("kernel.json unchanged after --force")
	}
	if err := k.Verify(); err != nil {
		t.Error(err)
	}
	entries, _ := os.ReadDir(h.Path(home.KernelsDir))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".install-") {
			t.Errorf("leftover %s", e.Name())
		}
	}
}

// fakeDeb builds a tiny .deb with the given control fields and files.
func fakeDeb(t *testing.T, pkg, version string, files map[string]string) string {
	t.Helper()
	b := map[string][]byte{}
	for name, body := range files {
		b[name] = []byte(body)
	}
	return testenv.BuildDeb(t, pkg, version, b)
}

func TestInstallDebHashMismatch(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	deb := fakeDeb(t, DefaultPackage, DefaultVersion, map[string]string{"boot/vmlinuz-x": "not a kernel"})
	_, err := Install(context.Background(), h, InstallOptions{Deb: deb})
	if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), DefaultDebSHA256) || !strings.Contains(err.Error(), deb) {
		t.Fatalf("Install(forged deb) = %v; want a hash mismatch naming the file and pin", err)
	}
	if _, err := Default(h); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("after a failed install, Default = %v", err)
	}
}

func TestInstallBadDebLeavesNothing(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	deb := fakeDeb(t, "linux-image-test", "0.1", map[string]string{"boot/vmlinuz-0.1": "not a kernel"})
	_, err := Install(context.Background(), h, InstallOptions{Deb: deb, Name: "mine"})
	if err == nil || !strings.Contains(err.Error(), "bzImage") {
		t.Fatalf("Install(non-kernel deb) = %v", err)
	}
	entries, _ := os.ReadDir(h.Path(home.KernelsDir))
	for _, e := range entries {
		if e.Name() != ".lock-mine" {
			t.Errorf("failed install left %s", e.Name())
		}
	}
	if _, err := Load(h, "mine"); !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "--name mine") {
		t.Errorf("Load after failed install = %v", err)
	}

	deb = fakeDeb(t, "linux-image-test", "0.2", map[string]string{"usr/share/doc/x": "x"})
	if _, err := Install(context.Background(), h, InstallOptions{Deb: deb}); err == nil || !strings.Contains(err.Error(), "boot/vmlinuz") {
		t.Errorf("Install(deb without kernel) = %v", err)
	}
	if _, err := Install(context.Background(), h, InstallOptions{Deb: filepath.Join(t.TempDir(), "nope.deb")}); err == nil {
		t.Errorf("Install(missing deb) succeeded")
	}
	if _, err := Install(context.Background(), h, InstallOptions{Name: "../evil"}); err == nil || !strings.Contains(err.Error(), "kernel name") {
		t.Errorf("Install(bad name) = %v", err)
	}
}

func TestAptErrors(t *testing.T) {
	testenv.RequireTool(t, "apt-get")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := aptDownload(ctx, dir, DefaultPackage, "0.0.0-not-a-version")
	if !errors.Is(err, ErrNotInArchive) || !strings.Contains(err.Error(), "no longer in the apt archive") || !strings.Contains(err.Error(), "--deb") {
		t.Errorf("missing version: %v", err)
	}
	_, err = aptDownload(ctx, dir, "microagent-no-such-package", "1")
	if !errors.Is(err, ErrNotInArchive) || !strings.Contains(err.Error(), "apt-get update") {
		t.Errorf("missing package: %v", err)
	}
}

func TestNotInstalled(t *testing.T) {
	h := home.Home{Root: t.TempDir()}
	_, err := Default(h)
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), `run "microagent kernel install"`) {
		t.Errorf("Default on empty state = %v", err)
	}
	if l, err := List(h); err != nil || len(l) != 0 {
		t.Errorf("List on empty state = %v, %v", l, err)
	}
	if _, err := Load(h, ".hidden"); err == nil {
		t.Errorf("Load(.hidden) succeeded")
	}
	// A damaged record is reported, by List too, with the fix.
	dir := h.Path(home.KernelsDir, "broken")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, RecordFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(h, "broken"); err == nil || !strings.Contains(err.Error(), "--name broken --force") {
		t.Errorf("Load(damaged) = %v", err)
	}
	if _, err := List(h); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("List with a damaged record = %v", err)
	}
}

func TestFromPath(t *testing.T) {
	_, k := sharedKernel(t)

	u, err := FromPath(k.Vmlinux, "")
	if err != nil {
		t.Fatal(err)
	}
	if u.VmlinuxSHA256 != k.VmlinuxSHA256 || len(u.Modules) != 0 || u.Release != k.Release || u.Source != "file:"+k.Vmlinux {
		t.Errorf("FromPath(vmlinux) = %+v", u)
	}

	// With the installed modules folder: the same modules, in the same order.
	u, err = FromPath(k.Vmlinux, filepath.Join(k.Dir, "modules"))
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Modules) != len(k.Modules) {
		t.Fatalf("modules %v, want %v", u.Modules, k.Modules)
	}
	for i := range u.Modules {
		if u.Modules[i].Name != k.Modules[i].Name || u.Modules[i].SHA256 != k.Modules[i].SHA256 {
			t.Errorf("module %d = %+v, want %+v", i, u.Modules[i], k.Modules[i])
		}
		if u.ModulePath(u.Modules[i]) != k.ModulePath(k.Modules[i]) {
			t.Errorf("module path %s, want %s", u.ModulePath(u.Modules[i]), k.ModulePath(k.Modules[i]))
		}
	}
	if err := u.Verify(); err != nil {
		t.Error(err)
	}

	// A folder with only some modules: those are used, missing dependencies are an error.
	part := t.TempDir()
	for _, n := range []string{"overlay"} {
		copyTo(t, filepath.Join(k.Dir, "modules", n+".ko"), filepath.Join(part, "sub", n+".ko"))
	}
	u, err = FromPath(k.Vmlinux, part)
	if err != nil || len(u.Modules) != 1 || u.Modules[0].File != filepath.Join("sub", "overlay.ko") {
		t.Errorf("FromPath(partial) = %+v, %v", u, err)
	}
	copyTo(t, filepath.Join(k.Dir, "modules", "virtio_blk.ko"), filepath.Join(part, "virtio_blk.ko"))
	if _, err := FromPath(k.Vmlinux, part); err == nil || !strings.Contains(err.Error(), "needed by virtio_blk") {
		t.Errorf("FromPath(missing dependency) = %v", err)
	}

	// A user kernel that changes afterwards fails Verify.
	mine := filepath.Join(t.TempDir(), "vmlinux")
	copyTo(t, k.Vmlinux, mine)
	u, err = FromPath(mine, "")
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, mine, 1000)
	if err := u.Verify(); err == nil || !strings.Contains(err.Error(), mine) {
		t.Errorf("Verify(changed user kernel) = %v", err)
	}

	// Not a kernel.
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, []byte("hello"), 0o600)
	if _, err := FromPath(junk, ""); err == nil || !strings.Contains(err.Error(), "neither an ELF") {
		t.Errorf("FromPath(junk) = %v", err)
	}
	if _, err := FromPath("/bin/true", ""); err == nil || !strings.Contains(err.Error(), "PVH") {
		t.Errorf("FromPath(/bin/true) = %v", err)
	}
}

func copyTo(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(src, dst); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	_, k := sharedKernel(t)
	files := map[string]string{}
	for _, m := range k.Modules {
		files[m.Name] = k.ModulePath(m)
	}
	ms := &moduleSet{dir: "test", files: files, builtin: map[string]bool{"virtio": true, "virtio_ring": true}}
	order, err := ms.resolve([]string{"virtio-blk"})
	if err != nil || len(order) != 1 || order[0].name != "virtio_blk" {
		t.Errorf("with virtio built in: %v, %v", order, err)
	}
	ms.builtin = map[string]bool{}
	delete(ms.files, "virtio_ring")
	if _, err := ms.resolve([]string{"virtio_blk"}); err == nil || !strings.Contains(err.Error(), "virtio_ring (needed by virtio") {
		t.Errorf("missing dependency: %v", err)
	}
}

func TestBzImageParsing(t *testing.T) {
	dir := t.TempDir()
	// Too short, no HdrS, old protocol, payload out of range, non-LZ4 payload.
	mk := func(name string, size int, set func([]byte)) string {
		b := make([]byte, size)
		if set != nil {
			set(b)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	hdr := func(b []byte) {
		b[bzSetupSects] = 1
		copy(b[bzHeaderMagic:], "HdrS")
		binary.LittleEndian.PutUint16(b[bzVersion:], 0x20f)
	}
	cases := map[string]string{
		mk("short", 100, nil):  "too small",
		mk("nohdr", 4096, nil): "not a bzImage",
		mk("old", 4096, func(b []byte) { hdr(b); binary.LittleEndian.PutUint16(b[bzVersion:], 0x204) }): "too old",
		mk("range", 4096, func(b []byte) {
			hdr(b)
			binary.LittleEndian.PutUint32(b[bzPayloadLength:], 1<<20)
		}): "outside",
		mk("bzip2", 4096, func(b []byte) {
			hdr(b)
			binary.LittleEndian.PutUint32(b[bzPayloadLength:], 64)
			copy(b[1024:], magicBzip2)
		}): "bzip2 compression is not supported",
		mk("badxz", 4096, func(b []byte) {
			hdr(b)
			binary.LittleEndian.PutUint32(b[bzPayloadLength:], 64)
			copy(b[1024:], magicXZ)
		}): "xz: stream header CRC mismatch",
		mk("badlz4", 4096, func(b []byte) {
			hdr(b)
			binary.LittleEndian.PutUint32(b[bzPayloadLength:], 64)
			copy(b[1024:], magicLZ4Legacy)
			for i := 1028; i < 1088; i++ {
				b[i] = 0xff
			}
		}): "decompress",
	}
	for p, want := range cases {
		_, err := extractVmlinux(context.Background(), p, filepath.Join(dir, "out"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", filepath.Base(p), err, want)
		}
	}
	// Garbage notes never panic.
	for _, n := range [][]byte{nil, make([]byte, 11), {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 18, 0, 0, 0, 'X'}} {
		if _, ok := findXenNote(n, binary.LittleEndian, 18); ok {
			t.Errorf("findXenNote(%x) found a note", n)
		}
	}
}

// cancelOn cancels a context when a progress line contains a word, like a
// Ctrl-C arriving at that point of an install.
type cancelOn struct {
	word   string
	cancel context.CancelFunc
	t      *testing.T
}

func (c cancelOn) Write(p []byte) (int, error) {
	c.t.Log(strings.TrimSpace(string(p)))
	if strings.Contains(string(p), c.word) {
		c.cancel()
	}
	return len(p), nil
}

func TestInstallInterrupted(t *testing.T) {
	testenv.RequireKernelInstall(t, testenv.CacheDir(), DefaultDebSHA256)
	h := home.Home{Root: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ictx, icancel := context.WithCancel(ctx)
	_, err := Install(ictx, h, InstallOptions{CacheDir: testenv.CacheDir(), Stderr: cancelOn{"extracting", icancel, t}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted install = %v, want context.Canceled", err)
	}
	entries, _ := os.ReadDir(h.Path(home.KernelsDir))
	for _, e := range entries {
		if e.Name() != ".lock-default" {
			t.Errorf("interrupted install left %s", e.Name())
		}
	}
	if _, err := Default(h); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("after an interrupted install, Default = %v", err)
	}
}
