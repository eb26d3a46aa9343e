package fsutil

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCopySparse copies a file with data, zero blocks and holes both ways
// (in the kernel, and through visit) and checks contents, what visit saw,
// and that zero blocks stay holes when visited.
func TestCopySparse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	const size = 8 << 20
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.WriteAt(bytes.Repeat([]byte("a"), 5000), 4096)
	f.WriteAt(make([]byte, 3<<20), 2<<20) // written zeros: data, not a hole
	f.WriteAt([]byte("end"), size-3)
	f.Close()
	want, _ := os.ReadFile(src)

	for _, visited := range []bool{false, true} {
		dst := filepath.Join(dir, "dst")
		os.Remove(dst)
		var seen int64
		var visit VisitFunc
		if visited {
			visit = func(off int64, p []byte) error { seen += int64(bytes.Count(p, []byte("a"))); return nil }
		}
		if err := CopySparseFile(context.Background(), src, dst, size, visit); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(dst)
		if !bytes.Equal(got, want) {
			t.Fatalf("visited=%v: contents differ", visited)
		}
		if visited && seen != 5000 {
			t.Errorf("visit saw %d 'a' bytes, want 5000", seen)
		}
		if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v", fi.Mode())
		}
		if err := CopySparseFile(context.Background(), src, dst, size, visit); err == nil {
			t.Error("copy over an existing file: no error")
		}
	}
	var st1, st2 os.FileInfo
	st1, _ = os.Stat(src)
	st2, _ = os.Stat(filepath.Join(dir, "dst"))
	if blocks(st2) >= blocks(st1) && blocks(st1) > 0 {
		t.Errorf("visited copy uses %d blocks, the source %d: zero blocks were written", blocks(st2), blocks(st1))
	}
}

func blocks(fi os.FileInfo) int64 { return fi.Sys().(*syscall.Stat_t).Blocks }
