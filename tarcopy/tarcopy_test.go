package tarcopy

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tree builds a source tree with every kind of entry Write handles.
func tree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "sub", "empty"), 0o755))
	must(os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha"), 0o640))
	must(os.WriteFile(filepath.Join(src, "sub", "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(syscall.Chmod(filepath.Join(src, "sub", "run.sh"), 0o4755)) // os.Chmod would drop the raw bit
	must(os.Symlink("../a.txt", filepath.Join(src, "sub", "rel-link")))
	must(os.Symlink("/etc/passwd", filepath.Join(src, "abs-link")))
	must(os.Symlink("nowhere", filepath.Join(src, "dangling")))
	must(os.Link(filepath.Join(src, "a.txt"), filepath.Join(src, "sub", "hard")))
	must(syscall.Mkfifo(filepath.Join(src, "fifo"), 0o620))
	must(os.Chmod(filepath.Join(src, "sub", "empty"), 0o700))
	mt := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)
	for _, p := range []string{"a.txt", "sub/run.sh", "sub/empty", "sub", "fifo"} {
		must(os.Chtimes(filepath.Join(src, p), mt, mt))
	}
	return src
}

type entry struct {
	mode   fs.FileMode
	target string
	data   string
	mtime  time.Time
	uid    uint32
}

func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		fi, _ := os.Lstat(p)
		e := entry{mode: fi.Mode(), uid: fi.Sys().(*syscall.Stat_t).Uid}
		if fi.Mode()&fs.ModeSymlink != 0 {
			e.target, _ = os.Readlink(p)
		} else {
			e.mtime = fi.ModTime()
		}
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			e.data = string(b)
		}
		if rel != "." {
			out[rel] = e
		}
		return nil
	})
	return out
}

func roundTrip(t *testing.T, src, dst string, o ExtractOptions) (Stats, error) {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Write(&buf, src, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return Extract(&buf, dst, o)
}

func TestRoundTripKeepsEverything(t *testing.T) {
	src := tree(t)
	dst := filepath.Join(t.TempDir(), "copy")
	st, err := roundTrip(t, src, dst, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, got := snapshot(t, src), snapshot(t, dst)
	if len(want) != len(got) {
		t.Fatalf("got %d entries, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		if g := got[k]; g != w {
			t.Errorf("%s: got %+v, want %+v", k, g, w)
		}
	}
	if st.Files != 3 || st.Dirs != 3 || st.Symlinks != 3 || st.Other != 1 {
		t.Errorf("stats %+v", st)
	}
	a, _ := os.Stat(filepath.Join(dst, "a.txt"))
	h, _ := os.Stat(filepath.Join(dst, "sub", "hard"))
	if !os.SameFile(a, h) {
		t.Error("hard link not kept")
	}
}

func TestDockerCpSemantics(t *testing.T) {
	src := tree(t)
	file := filepath.Join(src, "a.txt")
	base := t.TempDir()
	existingDir := filepath.Join(base, "dir")
	os.Mkdir(existingDir, 0o755)
	existingFile := filepath.Join(base, "file")
	os.WriteFile(existingFile, []byte("old"), 0o600)

	check := func(p, data string) {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil || string(b) != data {
			t.Fatalf("%s: %q %v", p, b, err)
		}
	}
	// File into an existing directory keeps its name.
	if _, err := roundTrip(t, file, existingDir, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	check(filepath.Join(existingDir, "a.txt"), "alpha")
	// File onto an existing file replaces it.
	if _, err := roundTrip(t, file, existingFile, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	check(existingFile, "alpha")
	// File to a new name.
	if _, err := roundTrip(t, file, filepath.Join(base, "new"), ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	check(filepath.Join(base, "new"), "alpha")
	// Directory into an existing directory: nested under its name.
	if _, err := roundTrip(t, src, existingDir, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	check(filepath.Join(existingDir, "src", "a.txt"), "alpha")
	// Directory contents ("/.") into an existing directory.
	if _, err := roundTrip(t, src+"/.", existingDir, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	check(filepath.Join(existingDir, "sub", "run.sh"), "#!/bin/sh\n")
	// Directory to a new name: created as a copy.
	if _, err := roundTrip(t, src, filepath.Join(base, "newdir"), ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	check(filepath.Join(base, "newdir", "a.txt"), "alpha")
	// Parents are created only on request.
	deep := filepath.Join(base, "x", "y", "z")
	if _, err := roundTrip(t, file, deep, ExtractOptions{}); !errors.Is(err, ErrDestination) {
		t.Fatalf("missing parent: %v", err)
	}
	if _, err := roundTrip(t, file, deep, ExtractOptions{MkdirParents: true}); err != nil {
		t.Fatal(err)
	}
	check(deep, "alpha")

	// Refusals, with nothing written.
	before := snapshot(t, base)
	for _, c := range []struct{ src, dst, msg string }{
		{src, existingFile, "cannot copy a directory onto the file"},
		{file, existingFile + "/", "is not a directory"},
		{file, filepath.Join(base, "nodir") + "/", "does not exist"},
		{file, filepath.Join(base, "nope", "f"), "parent directory"},
	} {
		_, err := roundTrip(t, c.src, c.dst, ExtractOptions{})
		if !errors.Is(err, ErrDestination) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s -> %s: got %v, want %q", c.src, c.dst, err, c.msg)
		}
	}
	if after := snapshot(t, base); len(after) != len(before) {
		t.Errorf("a refused copy changed the destination: %d -> %d entries", len(before), len(after))
	}
	if _, err := Write(&bytes.Buffer{}, filepath.Join(base, "missing"), WriteOptions{}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing source: %v", err)
	}
}

// evil builds an archive from raw headers.
func evil(t testing.TB, hs ...*tar.Header) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close()
	return &buf
}

func TestHostileArchivesStayInside(t *testing.T) {
	outside := t.TempDir()
	cases := map[string][]*tar.Header{
		"dotdot":   {{Name: "d/", Typeflag: tar.TypeDir}, {Name: "d/../../escape", Typeflag: tar.TypeReg, Size: 1}},
		"absolute": {{Name: "d/", Typeflag: tar.TypeDir}, {Name: "/abs", Typeflag: tar.TypeReg, Size: 1}},
		"through symlink": {{Name: "d/", Typeflag: tar.TypeDir},
			{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "d/l/escape", Typeflag: tar.TypeReg, Size: 1}},
		"through relative symlink": {{Name: "d/", Typeflag: tar.TypeDir},
			{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../../" + outside},
			{Name: "d/l/escape", Typeflag: tar.TypeReg, Size: 1}},
		"hard link out": {{Name: "d/", Typeflag: tar.TypeDir},
			{Name: "d/h", Typeflag: tar.TypeLink, Linkname: "../../../../etc/passwd"}},
		"hard link to a file not in the archive": {{Name: "d/", Typeflag: tar.TypeDir},
			{Name: "d/h", Typeflag: tar.TypeLink, Linkname: "d/pre"}},
		"outside the top": {{Name: "d/", Typeflag: tar.TypeDir}, {Name: "e/x", Typeflag: tar.TypeReg, Size: 1}},
	}
	for name, hs := range cases {
		t.Run(name, func(t *testing.T) {
			dst := t.TempDir()
			os.MkdirAll(filepath.Join(dst, "d"), 0o755)
			os.WriteFile(filepath.Join(dst, "d", "pre"), []byte("pre"), 0o600)
			_, err := Extract(evil(t, hs...), dst, ExtractOptions{})
			if err == nil || !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "outside") {
				t.Fatalf("got %v, want a refusal", err)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("wrote outside the destination: %v", ents)
			}
			// ExtractInto applies the same rules.
			os.RemoveAll(filepath.Join(dst, "d", "l"))
			if _, err := ExtractInto(evil(t, hs...), dst, ExtractOptions{}); err == nil && name != "outside the top" {
				t.Fatalf("ExtractInto accepted it")
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("ExtractInto wrote outside the destination: %v", ents)
			}
		})
	}
	// A symlink already in the destination is not followed either.
	dst := t.TempDir()
	os.Symlink(outside, filepath.Join(dst, "link"))
	_, err := ExtractInto(evil(t, &tar.Header{Name: "link/escape", Typeflag: tar.TypeReg, Size: 1}), dst, ExtractOptions{})
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("pre-existing symlink: got %v", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("wrote through a pre-existing symlink: %v", ents)
	}
}

func TestModeOverrideAndOwner(t *testing.T) {
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("x"), 0o644)
	var buf bytes.Buffer
	if _, err := Write(&buf, src, WriteOptions{Mode: 0o600}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "g")
	o := ExtractOptions{}
	if os.Geteuid() == 0 {
		o.Owner = &Owner{UID: 1234, GID: 4321}
	}
	if _, err := Extract(&buf, dst, o); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dst)
	if fi.Mode() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	if o.Owner != nil {
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 4321 {
			t.Errorf("owner %d:%d", st.Uid, st.Gid)
		}
	}
	for _, bad := range []string{"", "9", "0x1", "77777", "-1"} {
		if _, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q) accepted", bad)
		}
	}
	if m, err := ParseMode("4755"); err != nil || m != 0o755|fs.ModeSetuid {
		t.Errorf("ParseMode(4755) = %v, %v", m, err)
	}
}

func TestDuplicateEntriesAndFreshDirectories(t *testing.T) {
	outside := t.TempDir()
	// In a directory the extraction creates, a repeated name replaces the
	// first; a symlink there still cannot be written through.
	dst := filepath.Join(t.TempDir(), "new")
	buf := evil(t,
		&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Size: 1},
		&tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Size: 3},
		&tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: outside},
		&tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: outside},
	)
	if _, err := Extract(buf, dst, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "f")); string(b) != "xxx" {
		t.Fatalf("repeated entry: %q", b)
	}
	buf = evil(t,
		&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: outside},
		&tar.Header{Name: "d/l/x", Typeflag: tar.TypeReg, Size: 1},
	)
	if _, err := Extract(buf, filepath.Join(t.TempDir(), "new"), ExtractOptions{}); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("through a symlink in a fresh directory: %v", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("wrote outside: %v", ents)
	}
}
