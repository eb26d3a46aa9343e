package usernet

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestLogRotates: the log never grows past MaxLogBytes; the part before
// is kept as FILE.1, and nothing else.
func TestLogRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "egress.log")
	l, err := OpenLog(path)
	if err != nil {
		t.Fatal(err)
	}
	line := append(bytes.Repeat([]byte("x"), 1023), '\n')
	for range 3 * MaxLogBytes / len(line) {
		if _, err := l.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	for _, p := range []string{path, path + RotatedSuffix} {
		fi, err := os.Stat(p)
		if err != nil || fi.Size() > MaxLogBytes || fi.Size()%int64(len(line)) != 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v", p, fi, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 2 {
		t.Errorf("%d files, want the log and its previous part", len(ents))
	}
	// Reopened, it appends.
	other := filepath.Join(t.TempDir(), "egress.log")
	for range 2 {
		l, err := OpenLog(other)
		if err != nil {
			t.Fatal(err)
		}
		l.Write(line)
		l.Close()
	}
	if fi, err := os.Stat(other); err != nil || fi.Size() != 2*int64(len(line)) {
		t.Errorf("reopened log: %v, %v; want %d bytes", fi, err, 2*len(line))
	}
}
