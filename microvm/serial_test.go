package microvm

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A console flood written as QEMU writes it (O_APPEND, without pause)
// keeps console.log and its one rotation bounded, and the newest output
// is in console.log. A fake: the VM test floods a real guest's console.
func TestSerialLogCapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { CapSerialLog(path, nil, stop); close(done) }()
	line := bytes.Repeat([]byte("spam "), 200)
	line = append(line, '\n')
	var written int64
	var peak int64
	deadline := time.Now().Add(4500 * time.Millisecond)
	for time.Now().Before(deadline) {
		// About 20 MB/s: faster than a UART, so the bound holds for one.
		for range 20 {
			f.Write(line)
			written += int64(len(line))
		}
		time.Sleep(time.Millisecond / 5)
		if fi, err := os.Stat(path); err == nil && fi.Size() > peak {
			peak = fi.Size()
		}
	}
	f.WriteString("the last line\n")
	close(stop)
	<-done
	cur, _ := os.ReadFile(path)
	rot, err := os.Stat(RotatedSerialLog(path))
	if err != nil {
		t.Fatalf("no rotation after %d MB: %v", written>>20, err)
	}
	t.Logf("wrote %d MiB: console.log peaked at %.1f MiB, is %.1f MiB, console.log.1 %.1f MiB",
		written>>20, float64(peak)/(1<<20), float64(len(cur))/(1<<20), float64(rot.Size())/(1<<20))
	// The cap plus what 20 MB/s adds in one check.
	if ceiling := int64(consoleCap + 24<<20); peak > ceiling || rot.Size() > ceiling {
		t.Errorf("console.log peaked at %d bytes, console.log.1 %d: over %d", peak, rot.Size(), ceiling)
	}
	if !strings.HasSuffix(string(cur), "the last line\n") || !strings.Contains(string(cur), "console log rotated") {
		t.Errorf("console.log does not end with the newest output after a rotation note")
	}
	if fi, _ := os.Stat(path); fi.Size() != int64(len(cur)) {
		t.Errorf("console.log is sparse or changed")
	}
}
