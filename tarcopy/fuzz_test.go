package tarcopy

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// FuzzExtract feeds arbitrary archives to the host-side extraction of a
// copy out of a workspace (Untrusted, Top "top" or "." for a directory's
// contents) and checks what a hostile guest must never get, whatever the
// archive and whether or not Extract fails: nothing outside the
// destination changes, nothing lands beside the requested name, and
// nothing under it is setuid, setgid, sticky, a device node or a FIFO.
func FuzzExtract(f *testing.F) {
	seed := func(contents bool, hs ...*tar.Header) { f.Add(evil(f, hs...).Bytes(), contents) }
	dir := func(n string, mode int64) *tar.Header {
		return &tar.Header{Name: n, Typeflag: tar.TypeDir, Mode: mode}
	}
	reg := func(n string, mode int64) *tar.Header {
		return &tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: mode, Size: 3}
	}
	link := func(n, to string, typ byte) *tar.Header {
		return &tar.Header{Name: n, Typeflag: typ, Linkname: to}
	}
	// The destination is base/dst and the outside directory base/outside,
	// so "../outside" and "../../outside" from the top reach it.
	seed(false, dir("top/", 0o755), reg("top/f", 0o4755), reg("top/g", 0o2755), dir("top/s/", 0o1777))
	seed(false, reg(".bashrc", 0o644))
	seed(false, dir("top/", 0o755), reg(".bashrc", 0o644))
	seed(false, dir("top/", 0o755), reg("top/../../outside/x", 0o644))
	seed(false, dir("top/", 0o755), reg("/abs", 0o644))
	seed(false, dir("top/", 0o755), link("top/l", "../../outside", tar.TypeSymlink), reg("top/l/x", 0o644))
	seed(false, link("top", "../outside", tar.TypeSymlink), reg("top/x", 0o644))
	seed(false, dir("top/", 0o755), link("top/h", "../../outside/o", tar.TypeLink))
	seed(false, dir("top/", 0o755), &tar.Header{Name: "top/mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1},
		&tar.Header{Name: "top/sda", Typeflag: tar.TypeBlock, Devmajor: 8}, &tar.Header{Name: "top/p", Typeflag: tar.TypeFifo})
	seed(false, dir("top/", 0o755), reg("top/f", 0o644), link("top/f", "../../outside", tar.TypeSymlink), reg("top/f", 0o4777))
	seed(false, dir("top/", 0o755), link("top/d", "../../outside", tar.TypeSymlink), dir("top/d/", 0o4777))
	seed(false, dir("top/", 0o755), reg("top/f", 0o644), link("top/h", "top/f", tar.TypeLink), reg("top/h", 0o6755))
	seed(true, dir("./", 0o1777), reg("./f", 0o4755), link("./l", "../outside", tar.TypeSymlink), reg("./l/x", 0o644))
	seed(true, dir("./", 0o755), reg("../outside/x", 0o644))
	seed(true, reg("x", 0o644))
	f.Add([]byte("not a tar archive"), false)

	f.Fuzz(func(t *testing.T, archive []byte, contents bool) {
		// A sparse entry of a few bytes can stand for terabytes of zeros:
		// a disk-filling guest is not what this looks for.
		tr := tar.NewReader(bytes.NewReader(archive))
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if h.Size > 1<<20 {
				t.Skip("an entry larger than 1 MiB")
			}
		}
		base := t.TempDir()
		outside := filepath.Join(base, "outside")
		dst := filepath.Join(base, "dst")
		if err := os.Mkdir(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(outside, "o"), []byte("outside"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		o := ExtractOptions{Untrusted: true, Top: "top"}
		if contents {
			o.Top = "."
		}
		Extract(bytes.NewReader(archive), dst, o) // refusals are fine; what matters is below

		ents, _ := os.ReadDir(outside)
		fi, err := os.Stat(filepath.Join(outside, "o"))
		if len(ents) != 1 || err != nil || fi.Mode() != 0o600 || fi.Size() != 7 {
			t.Fatalf("the outside directory changed: %v, o: %v %v", ents, fi, err)
		}
		if !contents {
			for _, e := range mustReadDir(t, dst) {
				if e.Name() != "top" {
					t.Fatalf("%q landed beside the requested top", e.Name())
				}
			}
		}
		filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			info, err := os.Lstat(p)
			if err != nil {
				return nil
			}
			m := info.Mode()
			if m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
				t.Fatalf("%s: mode %v keeps a special bit", p, m)
			}
			if m&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
				t.Fatalf("%s: created a special file (%v)", p, m)
			}
			if d.IsDir() {
				// Readable for this walk and t.TempDir's cleanup when
				// not root; checked above.
				os.Chmod(p, m&fs.ModePerm|0o700)
			}
			return nil
		})
	})
}

func mustReadDir(t *testing.T, p string) []fs.DirEntry {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	return ents
}
