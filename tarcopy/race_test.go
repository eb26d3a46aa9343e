package tarcopy

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestExtractMetadataRace is the guest agent's case (root, the archive's
// owners kept, setuid kept): a workload that can write in the destination
// swaps each entry, between its creation and its chmod/chown/utimes, for a
// symlink or a hard link to a file outside. Metadata is set through the
// entry's own descriptor, so the outside file must never change. (After
// containerd's archive test for the same race.)
func TestExtractMetadataRace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the agent extracts as root; the chown half of the race needs root")
	}
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.WriteFile(outside, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	os.Chtimes(outside, mt, mt)
	before, _ := os.Stat(outside)

	const entries = 40
	hs := []*tar.Header{{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o777}}
	for i := range entries {
		hs = append(hs,
			&tar.Header{Name: fmt.Sprintf("d/f%d", i), Typeflag: tar.TypeReg, Mode: 0o4777, Uid: 4242, Gid: 4242, Size: 1, ModTime: time.Unix(1, 0)},
			&tar.Header{Name: fmt.Sprintf("d/p%d", i), Typeflag: tar.TypeFifo, Mode: 0o4777, Uid: 4242, Gid: 4242, ModTime: time.Unix(1, 0)},
			&tar.Header{Name: fmt.Sprintf("d/s%d/", i), Typeflag: tar.TypeDir, Mode: 0o4777, Uid: 4242, Gid: 4242, ModTime: time.Unix(1, 0)})
	}
	archive := evil(t, hs...).Bytes()

	iterations := 50
	if testing.Short() {
		iterations = 10
	}
	for it := range iterations {
		dst := filepath.Join(base, fmt.Sprint("dst", it))
		os.Mkdir(dst, 0o755)
		d := filepath.Join(dst, "d")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := n % entries
				kind := []string{"f", "p", "s"}[n/entries%3]
				p := filepath.Join(d, fmt.Sprint(kind, i))
				tmp := p + ".swap"
				// Rename over the entry: it is replaced in one step,
				// as an attacker would do it.
				if n%2 == 0 {
					os.Symlink(outside, tmp)
				} else {
					os.Link(outside, tmp)
				}
				if kind == "s" {
					os.Rename(p, p+".moved")
				}
				os.Rename(tmp, p)
				os.Remove(tmp)
			}
		}()
		Extract(bytes.NewReader(archive), dst, ExtractOptions{}) // errors are expected: the tree changes under it
		close(stop)
		wg.Wait()
		after, err := os.Stat(outside)
		if err != nil {
			t.Fatal(err)
		}
		st := after.Sys().(*syscall.Stat_t)
		if after.Mode() != before.Mode() || st.Uid != 0 || st.Gid != 0 || !after.ModTime().Equal(before.ModTime()) {
			t.Fatalf("iteration %d: the file outside changed: mode %v uid %d gid %d mtime %v (was %v, 0:0, %v)",
				it, after.Mode(), st.Uid, st.Gid, after.ModTime(), before.Mode(), before.ModTime())
		}
		os.RemoveAll(dst)
	}
}
