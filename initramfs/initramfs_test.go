package initramfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/kernel"
)

var (
	agentOnce sync.Once
	agentDir  string
	agentErr  error
	agents    = map[string]string{}
)

// testAgent builds the stand-in agent (testdata/smokeinit, static) once per
// test binary; tags "bloat" gives a ~5 MB one like the real agent.
func testAgent(t *testing.T, tags string) string {
	t.Helper()
	gobin := testenv.RequireTool(t, "go")
	agentOnce.Do(func() { agentDir, agentErr = os.MkdirTemp("", "microagent-initramfs-test-") })
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	if p, ok := agents[tags]; ok {
		return p
	}
	out := filepath.Join(agentDir, "agent-"+tags)
	cmd := exec.Command(gobin, "build", "-tags", tags, "-o", out, "./testdata/smokeinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build stand-in agent: %v\n%s", err, b)
	}
	agents[tags] = out
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agentDir != "" {
		os.RemoveAll(agentDir)
	}
	os.Exit(code)
}

// fakeKernel makes a Kernel whose modules are small files (Build does not
// look inside them, only checks their hashes).
func fakeKernel(t *testing.T, names ...string) *kernel.Kernel {
	t.Helper()
	dir := t.TempDir()
	k := &kernel.Kernel{Name: "test", Dir: dir, Source: "test"}
	for i, n := range names {
		data := bytes.Repeat([]byte(n), 100+i) // sizes not a multiple of 4, to exercise padding
		rel := filepath.Join("modules", n+".ko")
		if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), data, 0o600); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		k.Modules = append(k.Modules, kernel.Module{Name: n, File: rel, SHA256: hex.EncodeToString(sum[:])})
	}
	return k
}

type entry struct {
	hdr  *cpio.Header
	data []byte
}

// readArchive reads an archive back with the cpio library, in order.
func readArchive(t *testing.T, data []byte) ([]string, map[string]entry) {
	t.Helper()
	r := cpio.NewReader(bytes.NewReader(data))
	var names []string
	m := map[string]entry{}
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		m[h.Name] = entry{h, b}
	}
	return names, m
}

// rdev returns the rdevmajor/rdevminor fields of a newc member, which the
// cpio library does not expose.
func rdev(t *testing.T, archive []byte, member string) (int64, int64) {
	t.Helper()
	i := bytes.Index(archive, []byte(member+"\x00"))
	if i < 110 {
		t.Fatalf("%s not found in archive", member)
	}
	hdr := archive[i-110 : i]
	field := func(off int) int64 {
		v, err := strconv.ParseInt(string(hdr[off:off+8]), 16, 64)
		if err != nil {
			t.Fatalf("%s header: %v", member, err)
		}
		return v
	}
	return field(78), field(86)
}

func TestBuildContents(t *testing.T) {
	agent := testAgent(t, "")
	k := fakeKernel(t, "virtio_ring", "virtio", "virtio_blk")
	var buf bytes.Buffer
	if err := Build(&buf, agent, k); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	names, m := readArchive(t, archive)

	seen := map[string]bool{}
	for _, n := range names {
		if dir := path.Dir(n); dir != "." && !seen[dir] {
			t.Errorf("%s comes before its folder %s (the kernel does not create parents)", n, dir)
		}
		seen[n] = true
	}
	for _, d := range Dirs {
		e, ok := m[strings.TrimPrefix(d, "/")]
		if !ok || !e.hdr.Mode.IsDir() {
			t.Errorf("folder %s missing or not a folder: %+v", d, e.hdr)
		}
	}
	if e := m["tmp"]; e.hdr == nil || e.hdr.Mode.Perm() != 0o777 || e.hdr.Mode&cpio.ModeSticky == 0 {
		t.Errorf("/tmp mode %v", e.hdr)
	}
	con, ok := m["dev/console"]
	if !ok || con.hdr.Mode&cpio.ModeType != cpio.TypeChar || con.hdr.Mode.Perm() != 0o600 {
		t.Fatalf("dev/console = %+v", con.hdr)
	}
	if maj, min := rdev(t, archive, "dev/console"); maj != 5 || min != 1 {
		t.Errorf("dev/console is %d,%d, want 5,1", maj, min)
	}

	want, _ := os.ReadFile(agent)
	in := m["init"]
	if in.hdr == nil || !in.hdr.Mode.IsRegular() || in.hdr.Mode.Perm() != 0o755 || !bytes.Equal(in.data, want) {
		t.Errorf("init: %+v, %d bytes (want %d, mode 0755)", in.hdr, len(in.data), len(want))
	}
	var order []string
	for _, mod := range k.Modules {
		name := mod.Name + ".ko"
		order = append(order, name)
		e := m["lib/modules/"+name]
		want, _ := os.ReadFile(k.ModulePath(mod))
		if e.hdr == nil || !e.hdr.Mode.IsRegular() || e.hdr.Mode.Perm() != 0o644 || !bytes.Equal(e.data, want) {
			t.Errorf("module %s: %+v", name, e.hdr)
		}
	}
	if got := string(m["lib/modules/order"].data); got != strings.Join(order, "\n")+"\n" {
		t.Errorf("order = %q", got)
	}

	// Same inputs, same bytes (no timestamps), so the cache key is honest.
	var again bytes.Buffer
	if err := Build(&again, agent, k); err != nil || !bytes.Equal(again.Bytes(), archive) {
		t.Errorf("rebuild differs (err %v)", err)
	}

	// A kernel with everything built in gives an empty order file.
	var empty bytes.Buffer
	if err := Build(&empty, agent, &kernel.Kernel{Name: "builtin"}); err != nil {
		t.Fatal(err)
	}
	if _, m := readArchive(t, empty.Bytes()); m["lib/modules/order"].hdr == nil || len(m["lib/modules/order"].data) != 0 {
		t.Errorf("built-in kernel: order = %q", m["lib/modules/order"].data)
	}
}

func TestBuildRejects(t *testing.T) {
	agent := testAgent(t, "")
	k := fakeKernel(t, "virtio_ring", "virtio")
	if err := os.WriteFile(k.ModulePath(k.Modules[1]), []byte("tampered"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Build(io.Discard, agent, k)
	if err == nil || !strings.Contains(err.Error(), k.ModulePath(k.Modules[1])) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("tampered module: %v", err)
	}

	good := fakeKernel(t, "virtio")
	if err := Build(io.Discard, agent, nil); err == nil {
		t.Errorf("nil kernel accepted")
	}
	notELF := filepath.Join(t.TempDir(), "agent.sh")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if err := Build(io.Discard, notELF, good); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("script agent: %v", err)
	}
	if err := Build(io.Discard, filepath.Join(t.TempDir(), "missing"), good); err == nil {
		t.Errorf("missing agent accepted")
	}
	if err := Build(io.Discard, t.TempDir(), good); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Errorf("folder as agent: %v", err)
	}
	// /bin/true is dynamically linked on Debian and Ubuntu.
	if _, err := os.Stat("/bin/true"); err == nil {
		if err := Build(io.Discard, "/bin/true", good); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
			t.Errorf("dynamic agent: %v", err)
		}
	}
}

func TestEnsureCache(t *testing.T) {
	agentSrc := testAgent(t, "bloat")
	h := home.Home{Root: t.TempDir()}
	agent := filepath.Join(t.TempDir(), "agent")
	data, err := os.ReadFile(agentSrc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(agent, data, 0o700); err != nil {
		t.Fatal(err)
	}
	k := fakeKernel(t, "virtio_ring", "virtio", "virtio_mmio")

	start := time.Now()
	p1, err := Ensure(h, agent, k)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first Ensure (build, %.1f MB agent): %s", float64(len(data))/1e6, time.Since(start))
	if filepath.Dir(p1) != h.Path(home.InitramfsDir) || !strings.HasSuffix(p1, Ext) {
		t.Errorf("path %s", p1)
	}
	fi1, err := os.Stat(p1)
	if err != nil || fi1.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v %v", fi1, err)
	}
	if di, err := os.Stat(filepath.Dir(p1)); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("initramfs dir: %v %v", di, err)
	}
	var direct bytes.Buffer
	if err := Build(&direct, agent, k); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p1); !bytes.Equal(got, direct.Bytes()) {
		t.Errorf("cached archive differs from Build's output")
	}

	// A hit returns the same file without rewriting it.
	var best time.Duration
	for i := 0; i < 5; i++ {
		start = time.Now()
		p2, err := Ensure(h, agent, k)
		if d := time.Since(start); i == 0 || d < best {
			best = d
		}
		if err != nil || p2 != p1 {
			t.Fatalf("second Ensure = %s, %v; want %s", p2, err, p1)
		}
	}
	t.Logf("cached Ensure: %s (best of 5)", best)
	fi2, _ := os.Stat(p1)
	if !os.SameFile(fi1, fi2) || !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Errorf("cache hit rewrote the archive")
	}

	// A changed agent or module gives a new archive; the old one stays.
	if err := os.WriteFile(agent, append(data, 0), 0o700); err != nil {
		t.Fatal(err)
	}
	p3, err := Ensure(h, agent, k)
	if err != nil || p3 == p1 {
		t.Errorf("changed agent: %s, %v (old %s)", p3, err, p1)
	}
	k2 := *k
	k2.Modules = append([]kernel.Module(nil), k.Modules[:2]...)
	p4, err := Ensure(h, agent, &k2)
	if err != nil || p4 == p3 || p4 == p1 {
		t.Errorf("other modules: %s, %v", p4, err)
	}
	entries, _ := os.ReadDir(h.Path(home.InitramfsDir)) // no stamp yet: the agent is too new
	if len(entries) != 3 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("initramfs dir holds %v, want 3 archives and no temp files", names)
	}

	// A failed build leaves nothing behind.
	os.Remove(k.ModulePath(k.Modules[0]))
	k3 := *k
	if err := os.WriteFile(agent, append(data, 1), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(h, agent, &k3); err == nil {
		t.Errorf("Ensure with a missing module succeeded")
	}
	if after, _ := os.ReadDir(h.Path(home.InitramfsDir)); len(after) != 3 {
		t.Errorf("failed build left files: %d entries", len(after))
	}
}

func TestEnsureStamp(t *testing.T) {
	src, err := os.ReadFile(testAgent(t, "bloat"))
	if err != nil {
		t.Fatal(err)
	}
	h := home.Home{Root: t.TempDir()}
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, src, 0o700); err != nil {
		t.Fatal(err)
	}
	k := fakeKernel(t, "virtio")
	stamps := h.Path(home.InitramfsDir, StampFile)

	// A just-written agent is hashed every time and not stamped.
	p1, err := Ensure(h, agent, k)
	if err != nil {
		t.Fatal(err)
	}
	before := agentHashes.Load()
	if p, err := Ensure(h, agent, k); err != nil || p != p1 || agentHashes.Load() != before+1 {
		t.Errorf("fresh agent: %s, %v, %d hashes", p, err, agentHashes.Load()-before)
	}
	if _, err := os.Stat(stamps); err == nil {
		t.Errorf("stamp written for an agent changed within the racy margin")
	}

	// Once it is older than the margin, it is stamped and later hits skip hashing.
	old := racyMargin
	racyMargin = 20 * time.Millisecond
	t.Cleanup(func() { racyMargin = old })
	timer := time.NewTimer(2 * racyMargin)
	<-timer.C
	if p, err := Ensure(h, agent, k); err != nil || p != p1 {
		t.Fatalf("stamping Ensure: %s, %v", p, err)
	}
	if fi, err := os.Stat(stamps); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stamp file: %v, %v", fi, err)
	}
	before = agentHashes.Load()
	var best time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		p, err := Ensure(h, agent, k)
		if d := time.Since(start); i == 0 || d < best {
			best = d
		}
		if err != nil || p != p1 {
			t.Fatalf("stamped Ensure: %s, %v", p, err)
		}
	}
	t.Logf("cached Ensure with a stamped agent: %s (best of 5)", best)
	if n := agentHashes.Load() - before; n != 0 {
		t.Errorf("stamped hits hashed the agent %d times", n)
	}

	// The same size, one byte different: the stamp no longer matches.
	f, err := os.OpenFile(agent, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{src[len(src)/2] ^ 0xff}, int64(len(src)/2)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p2, err := Ensure(h, agent, k)
	if err != nil || p2 == p1 {
		t.Errorf("changed agent under a stamp: %s, %v (old %s)", p2, err, p1)
	}
	// A damaged stamp file only costs a hash.
	os.WriteFile(stamps, []byte("{"), 0o600)
	if p, err := Ensure(h, agent, k); err != nil || p != p2 {
		t.Errorf("damaged stamp: %s, %v", p, err)
	}
}
