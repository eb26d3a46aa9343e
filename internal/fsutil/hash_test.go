package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSHA256File(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	writeFile(t, p, "abc")
	// The SHA-256 test vector for "abc" (FIPS 180-2).
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got, err := SHA256File(p); err != nil || got != want {
		t.Errorf("SHA256File = %q, %v, want %q", got, err, want)
	}
	if _, err := SHA256File(filepath.Join(t.TempDir(), "missing")); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}
