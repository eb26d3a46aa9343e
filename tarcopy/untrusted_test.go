package tarcopy

import (
	"archive/tar"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The host-side rules for an archive a guest sent (ExtractOptions.Untrusted,
// as CopyFromGuest extracts). They run as root, where ownership and mknod
// are real: a non-root run could not show that they are refused.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the ownership and device-node rules only matter, and only show, as root")
	}
}

func lstat(t *testing.T, p string) (fs.FileInfo, *syscall.Stat_t) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi, fi.Sys().(*syscall.Stat_t)
}

func TestUntrustedStripsSpecialBitsAndOwners(t *testing.T) {
	needRoot(t)
	hs := func() []*tar.Header {
		return []*tar.Header{
			{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: 4242, Gid: 4343},
			{Name: "top/suid", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 0, Gid: 0, Size: 1},
			{Name: "top/sgid", Typeflag: tar.TypeReg, Mode: 0o2750, Uid: 4242, Gid: 4343, Size: 1},
			{Name: "top/link", Typeflag: tar.TypeSymlink, Linkname: "suid", Uid: 4242, Gid: 4343},
		}
	}
	want := map[string]fs.FileMode{"": fs.ModeDir | 0o777, "suid": 0o755, "sgid": 0o750}

	// Default: setuid/setgid/sticky dropped, everything owned by us.
	dst := t.TempDir()
	if _, err := Extract(evil(t, hs()...), dst, ExtractOptions{Untrusted: true, Top: "top"}); err != nil {
		t.Fatal(err)
	}
	for name, mode := range want {
		fi, st := lstat(t, filepath.Join(dst, "top", name))
		if fi.Mode() != mode {
			t.Errorf("top/%s: mode %v, want %v", name, fi.Mode(), mode)
		}
		if st.Uid != 0 || st.Gid != 0 {
			t.Errorf("top/%s: owner %d:%d, want the extracting user 0:0", name, st.Uid, st.Gid)
		}
	}
	if _, st := lstat(t, filepath.Join(dst, "top", "link")); st.Uid != 0 {
		t.Errorf("top/link: uid %d, want 0", st.Uid)
	}

	// KeepOwner (cp -a): owners kept, the special bits still dropped.
	dst = t.TempDir()
	if _, err := Extract(evil(t, hs()...), dst, ExtractOptions{Untrusted: true, KeepOwner: true, Top: "top"}); err != nil {
		t.Fatal(err)
	}
	for name, mode := range want {
		fi, _ := lstat(t, filepath.Join(dst, "top", name))
		if fi.Mode() != mode {
			t.Errorf("-a: top/%s: mode %v, want %v", name, fi.Mode(), mode)
		}
	}
	for name, uid := range map[string]uint32{"": 4242, "suid": 0, "sgid": 4242, "link": 4242} {
		if _, st := lstat(t, filepath.Join(dst, "top", name)); st.Uid != uid {
			t.Errorf("-a: top/%s: uid %d, want %d", name, st.Uid, uid)
		}
	}

	// Control: the guest side (trusted) keeps bits and owners.
	dst = t.TempDir()
	if _, err := Extract(evil(t, hs()...), dst, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, st := lstat(t, filepath.Join(dst, "top", "sgid")); fi.Mode() != 0o750|fs.ModeSetgid || st.Uid != 4242 {
		t.Errorf("trusted: top/sgid: mode %v uid %d", fi.Mode(), st.Uid)
	}
}

func TestUntrustedCreatesNoDevicesOrFIFOs(t *testing.T) {
	needRoot(t)
	dst := t.TempDir()
	st, err := Extract(evil(t,
		&tar.Header{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "top/mem", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 1},
		&tar.Header{Name: "top/sda", Typeflag: tar.TypeBlock, Mode: 0o666, Devmajor: 8, Devminor: 0},
		&tar.Header{Name: "top/fifo", Typeflag: tar.TypeFifo, Mode: 0o666},
		&tar.Header{Name: "top/file", Typeflag: tar.TypeReg, Size: 2},
		// tar has no socket type: Write skips sockets, and an entry of a
		// type Extract does not know is refused (see below).
	), dst, ExtractOptions{Untrusted: true, Top: "top"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != 3 || st.Files != 1 || st.Other != 0 {
		t.Errorf("stats %+v, want 3 skipped, 1 file", st)
	}
	ents, _ := os.ReadDir(filepath.Join(dst, "top"))
	if len(ents) != 1 || ents[0].Name() != "file" {
		t.Fatalf("extracted %v, want only file", ents)
	}
	// An existing file of a skipped entry's name is left alone.
	os.WriteFile(filepath.Join(dst, "top", "fifo"), []byte("mine"), 0o644)
	if _, err := Extract(evil(t, &tar.Header{Name: "top/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "top/fifo", Typeflag: tar.TypeFifo}), dst, ExtractOptions{Untrusted: true}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "top", "fifo")); string(b) != "mine" {
		t.Errorf("a skipped FIFO replaced a file: %q", b)
	}
	_, err = Extract(evil(t, &tar.Header{Name: "top", Typeflag: 'Z'}), t.TempDir(), ExtractOptions{Untrusted: true})
	if err == nil || !strings.Contains(err.Error(), "unsupported type") {
		t.Errorf("unknown entry type: %v", err)
	}
}

func TestUntrustedTopNameIsTheRequestedOne(t *testing.T) {
	home := t.TempDir()
	// A guest asked for /x.json answers with .bashrc.
	_, err := Extract(evil(t, &tar.Header{Name: ".bashrc", Typeflag: tar.TypeReg, Size: 5}), home, ExtractOptions{Untrusted: true, Top: "x.json"})
	if err == nil || !strings.Contains(err.Error(), `".bashrc"`) || !strings.Contains(err.Error(), `"x.json"`) {
		t.Fatalf("wrong top name: %v", err)
	}
	// An entry outside the requested name, after a good top.
	_, err = Extract(evil(t,
		&tar.Header{Name: "x.json/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: ".bashrc", Typeflag: tar.TypeReg, Size: 5},
	), home, ExtractOptions{Untrusted: true, Top: "x.json"})
	if err == nil || !strings.Contains(err.Error(), `".bashrc"`) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("entry outside the top: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(home, ".bashrc")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf(".bashrc was written: %v", err)
	}
	// A directory's contents ("/.") are all below ".".
	if _, err := Extract(evil(t, &tar.Header{Name: "x.json", Typeflag: tar.TypeReg, Size: 1}), home, ExtractOptions{Untrusted: true, Top: "."}); err == nil {
		t.Fatal("a file answering a request for a directory's contents was accepted")
	}
	if _, err := Extract(evil(t, &tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "./a", Typeflag: tar.TypeReg, Size: 1}), home, ExtractOptions{Untrusted: true, Top: "."}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(home); len(ents) != 2 { // x.json/ from the refused copy, and a
		t.Errorf("home holds %v", ents)
	}
}

// TestUntrustedDestinationSymlinkNotFollowed is the two-step attack: a
// first copy leaves a symlink at the destination, the second copy would
// have written through it.
func TestUntrustedDestinationSymlinkNotFollowed(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.Mkdir(outside, 0o755)
	dest := filepath.Join(base, "dest")
	os.Mkdir(dest, 0o755)
	untrusted := ExtractOptions{Untrusted: true}

	// Copy 1: `cp ws:/work/out dest/out`, where the guest's /work/out is
	// a symlink: it lands as a symlink, as it should.
	o := untrusted
	o.Top = "out"
	if _, err := Extract(evil(t, &tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside}), filepath.Join(dest, "out"), o); err != nil {
		t.Fatal(err)
	}
	// Copy 2: `cp ws:/work/out/. dest/out` and friends: refused.
	contents := func() *tar.Header { return &tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755} }
	file := func() *tar.Header { return &tar.Header{Name: "f", Typeflag: tar.TypeReg, Size: 1} }
	for _, c := range []struct {
		dst string
		h   func() *tar.Header
	}{
		{"out", contents}, {"out/.", contents}, {"out/", file}, {"out", file}, {"out/new", file},
	} {
		_, err := Extract(evil(t, c.h(), &tar.Header{Name: "./planted", Typeflag: tar.TypeReg, Size: 1}), filepath.Join(dest, c.dst), untrusted)
		if !errors.Is(err, ErrDestination) || !strings.Contains(err.Error(), "is a symlink") {
			t.Errorf("dest/%s: got %v, want a refusal of the symlink", c.dst, err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("wrote through the planted symlink: %v", ents)
	}
	if l, err := os.Readlink(filepath.Join(dest, "out")); err != nil || l != outside {
		t.Fatalf("the symlink itself was changed: %q %v", l, err)
	}
	// Control: the guest side follows a symlink at its destination.
	if _, err := Extract(evil(t, contents(), &tar.Header{Name: "./planted", Typeflag: tar.TypeReg, Size: 1}), filepath.Join(dest, "out"), ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err != nil {
		t.Fatalf("trusted extraction no longer follows the destination: %v", err)
	}
}

func TestUntrustedKeepsTheRest(t *testing.T) {
	// Plain files, directories, symlinks, hard links and times still come
	// across untouched (the round trip minus what the rules remove).
	src := tree(t)
	dst := filepath.Join(t.TempDir(), "copy")
	st, err := roundTrip(t, src, dst, ExtractOptions{Untrusted: true, Top: "src"})
	if err != nil {
		t.Fatal(err)
	}
	got := snapshot(t, dst)
	for k, w := range snapshot(t, src) {
		switch k {
		case "fifo":
			if _, ok := got[k]; ok {
				t.Errorf("fifo created")
			}
			continue
		case "sub/run.sh":
			w.mode &^= fs.ModeSetuid
		}
		if g := got[k]; g != w {
			t.Errorf("%s: got %+v, want %+v", k, g, w)
		}
	}
	if st.Skipped != 1 || st.Files != 3 {
		t.Errorf("stats %+v", st)
	}
}
