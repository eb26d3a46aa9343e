package rootfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
)

func dumpe2fs(t *testing.T, p string) string {
	t.Helper()
	bin := testenv.RequireTool(t, "dumpe2fs")
	out, err := exec.Command(bin, "-h", p).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs -h %s: %v: %s", p, err, out)
	}
	return string(out)
}

func allocated(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestNewWritableDisk(t *testing.T) {
	testenv.RequireTool(t, "mkfs.ext4")
	h := home.Home{Root: t.TempDir()}
	ctx := context.Background()
	dir := t.TempDir()
	const size = 1 << 30

	first := filepath.Join(dir, "a.img")
	start := time.Now()
	if err := NewWritableDisk(ctx, h, first, size); err != nil {
		t.Fatal(err)
	}
	t.Logf("first 1 GiB disk (mkfs of the template + copy): %v", time.Since(start))
	second := filepath.Join(dir, "b.img")
	start = time.Now()
	if err := NewWritableDisk(ctx, h, second, size); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("next 1 GiB disk (sparse copy of the template): %v", took)
	if took > 200*time.Millisecond {
		t.Errorf("copying the template took %v", took)
	}

	for _, p := range []string{first, second} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != size || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: size %d mode %v", p, fi.Size(), fi.Mode())
		}
		if a := allocated(t, p); a > 8<<20 {
			t.Errorf("%s: %d bytes allocated; the copy is not sparse", p, a)
		}
	}
	info := dumpe2fs(t, second)
	expectMatch(t, "journal", info, `features:.*has_journal`)
	expectMatch(t, "reserved", info, `Reserved block count:\s+0\n`)
	expectMatch(t, "label", info, `volume name:\s+microagent-rw`)
	expectMatch(t, "state", info, `Filesystem state:\s+clean`)
	expectMatch(t, "root owner", debugfs(t, second, "stat /"), `User:\s+0\s+Group:\s+0`)
	fsck := testenv.RequireTool(t, "e2fsck")
	if out, err := exec.Command(fsck, "-fn", second).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	// The inode tables are flagged zeroed, so the guest runs no lazy init.
	groups := regexp.MustCompile(`(?m)^Group \d+:.*$`).FindAllString(dumpAll(t, second), -1)
	for _, g := range groups {
		if !regexp.MustCompile(`ITABLE_ZEROED`).MatchString(g) {
			t.Errorf("group not zeroed: %s", g)
		}
	}

	if err := NewWritableDisk(ctx, h, second, size); err == nil {
		t.Error("an existing disk was overwritten")
	}
	if err := NewWritableDisk(ctx, h, filepath.Join(dir, "tiny.img"), 1<<20); err == nil {
		t.Error("a 1 MiB disk was made")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("files in %s: %v", dir, entries)
	}
}

func dumpAll(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command(testenv.RequireTool(t, "dumpe2fs"), p).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v", err)
	}
	return string(out)
}

func TestGrow(t *testing.T) {
	testenv.RequireTool(t, "resize2fs")
	h := home.Home{Root: t.TempDir()}
	p := filepath.Join(t.TempDir(), "g.img")
	ctx := context.Background()
	if err := NewWritableDisk(ctx, h, p, 64<<20); err != nil {
		t.Fatal(err)
	}
	blocks := func() int {
		m := regexp.MustCompile(`Block count:\s+(\d+)`).FindStringSubmatch(dumpe2fs(t, p))
		n, _ := strconv.Atoi(m[1])
		return n
	}
	before := blocks()
	if err := Grow(ctx, p, 128<<20); err != nil {
		t.Fatal(err)
	}
	if after := blocks(); after != 2*before {
		t.Errorf("blocks %d -> %d", before, after)
	}
	if err := Grow(ctx, p, 32<<20); err == nil {
		t.Error("shrink accepted")
	}
}
