package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// entries lists dir's names, so tests can see that no temporary file stays.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "refs.json")
	if err := WriteFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	// Replacing gives the new content and exactly the new mode.
	if err := WriteFileAtomic(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil || string(data) != "two" {
		t.Errorf("content %q, %v", data, err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode: %v, %v", fi, err)
	}
	if got := entries(t, dir); len(got) != 1 || got[0] != "refs.json" {
		t.Errorf("directory holds %v, want only refs.json", got)
	}
}

func TestWriteAtomicTempName(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "abc.ext4")
	err := WriteAtomic(p, 0o600, func(f *os.File) error {
		if filepath.Dir(f.Name()) != dir || !strings.HasPrefix(filepath.Base(f.Name()), TempPrefix+"abc.ext4-") {
			t.Errorf("temporary file %s: want %s%s-* in %s", f.Name(), TempPrefix, "abc.ext4", dir)
		}
		if fi, err := f.Stat(); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("temporary file mode: %v, %v", fi, err)
		}
		_, err := f.WriteString("disk")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(p); err != nil || string(data) != "disk" {
		t.Errorf("content %q, %v", data, err)
	}
}

func TestWriteAtomicFillFails(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "index.json")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := WriteAtomic(p, 0o600, func(f *os.File) error {
		if _, err := f.WriteString("half"); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Errorf("error %v, want fill's error unwrapped", err)
	}
	if data, err := os.ReadFile(p); err != nil || string(data) != "old" {
		t.Errorf("old file changed: %q, %v", data, err)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("left behind: %v", got)
	}
}

func TestWriteAtomicMissingDir(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing", "x")
	called := false
	err := WriteAtomic(p, 0o600, func(*os.File) error { called = true; return nil })
	if !errors.Is(err, fs.ErrNotExist) || called {
		t.Errorf("error %v (fill called: %v), want ErrNotExist before fill", err, called)
	}
}

func TestWriteAtomicRenameFails(t *testing.T) {
	// A directory in the way: the rename fails and the temp file goes.
	dir := t.TempDir()
	p := filepath.Join(dir, "taken")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := WriteFileAtomic(p, []byte("x"), 0o600)
	var de *DirSyncError
	if err == nil || errors.As(err, &de) {
		t.Errorf("error %v, want the rename's", err)
	}
	if got := entries(t, dir); len(got) != 1 || got[0] != "taken" {
		t.Errorf("directory holds %v", got)
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Errorf("SyncDir: %v", err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SyncDir of a missing dir: %v", err)
	}
}

func TestDirSyncError(t *testing.T) {
	inner := &fs.PathError{Op: "sync", Path: "/state/images", Err: syscall.EIO}
	var err error = &DirSyncError{Dir: "/state/images", Err: inner}
	if err.Error() != inner.Error() {
		t.Errorf("message %q, want %q", err, inner)
	}
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("%v does not unwrap to EIO", err)
	}
}
