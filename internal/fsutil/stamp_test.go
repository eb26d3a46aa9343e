package fsutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestStatStamp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent")
	writeFile(t, p, "12345")
	a, err := StatStamp(p)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != 5 || a.Ino == 0 || a.MtimeNs == 0 || a.CtimeNs == 0 || a.SHA256 != "" {
		t.Errorf("stamp %+v", a)
	}
	if b, err := StatStamp(p); err != nil || !b.SameFile(a) {
		t.Errorf("unchanged file: %+v, %v, want same as %+v", b, err, a)
	}
	if _, err := StatStamp(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("StatStamp of a directory: %v", err)
	}
	if _, err := StatStamp(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Errorf("StatStamp of a missing file: %v", err)
	}

	// Each part of the identity counts.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	if b, err := StatStamp(link); err != nil || !b.SameFile(a) {
		t.Errorf("through a symlink: %+v, %v", b, err)
	}
	for name, change := range map[string]func(s *Stamp){
		"size":  func(s *Stamp) { s.Size++ },
		"mtime": func(s *Stamp) { s.MtimeNs++ },
		"ctime": func(s *Stamp) { s.CtimeNs++ },
		"inode": func(s *Stamp) { s.Ino++ },
		"dev":   func(s *Stamp) { s.Dev++ },
	} {
		b := a
		change(&b)
		if b.SameFile(a) {
			t.Errorf("a different %s still counts as the same file", name)
		}
	}
	// Restoring the times after a same-size write still moves ctime.
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, "54321")
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if b, err := StatStamp(p); err != nil || b.SameFile(a) {
		t.Errorf("rewritten file with its old mtime: %+v, %v, still the same as %+v", b, err, a)
	}
}

func TestStampsRecord(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vmlinux")
	writeFile(t, p, "kernel")
	before, err := StatStamp(p)
	if err != nil {
		t.Fatal(err)
	}
	s := Stamps{}

	// Changed within the margin before hashing began: racy, not kept.
	if s.Record("vmlinux", p, before, "aa", time.Now(), 3*time.Second) || len(s) != 0 {
		t.Errorf("racy file stamped: %v", s)
	}
	// Settled well before the hash started (a start in the future stands
	// in for waiting): kept, once.
	later := time.Now().Add(time.Hour)
	if !s.Record("vmlinux", p, before, "aa", later, 3*time.Second) {
		t.Fatalf("settled file not stamped")
	}
	if s.Record("vmlinux", p, before, "aa", later, 3*time.Second) {
		t.Errorf("recording the same stamp again reported a change")
	}
	if sum, ok := s.Hash("vmlinux", before); !ok || sum != "aa" {
		t.Errorf("Hash = %q, %v", sum, ok)
	}
	if _, ok := s.Hash("other", before); ok {
		t.Errorf("Hash of an unknown key hit")
	}
	// A file that changed while it was hashed is not stamped.
	writeFile(t, p, "kernel2")
	if s.Record("vmlinux", p, before, "bb", later, 3*time.Second) {
		t.Errorf("file changed during hashing was stamped")
	}
	cur, err := StatStamp(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Hash("vmlinux", cur); ok {
		t.Errorf("Hash hit for a changed file")
	}
	if !s.Record("vmlinux", p, cur, "bb", later, 3*time.Second) {
		t.Errorf("a new hash for a changed file did not replace the stamp")
	}
	if s.Record("gone", filepath.Join(t.TempDir(), "gone"), cur, "cc", later, 0) {
		t.Errorf("a missing file was stamped")
	}
}

func TestStampsSaveLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agents.json")
	if s := LoadStamps(p, "agents"); s == nil || len(s) != 0 {
		t.Errorf("missing file: %v", s)
	}
	s := Stamps{"/bin/agent": {SHA256: "aa", Size: 1, MtimeNs: 2, CtimeNs: 3, Ino: 4, Dev: 5}}
	if err := s.Save(p, "agents"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("stamp file: %v, %v", fi, err)
	}
	// The format is the one kernel and initramfs wrote before fsutil.
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"agents":{"/bin/agent":{"sha256":"aa","size":1,"mtime_ns":2,"ctime_ns":3,"ino":4,"dev":5}}}`
	if string(data) != want {
		t.Errorf("file holds %s, want %s", data, want)
	}
	got := LoadStamps(p, "agents")
	if len(got) != 1 || got["/bin/agent"] != s["/bin/agent"] {
		t.Errorf("loaded %v", got)
	}
	if other := LoadStamps(p, "files"); len(other) != 0 {
		t.Errorf("another field: %v", other)
	}
	for _, damaged := range []string{"{", "[]", `{"agents":3}`, ""} {
		writeFile(t, p, damaged)
		if s := LoadStamps(p, "agents"); s == nil || len(s) != 0 {
			t.Errorf("damaged file %q: %v", damaged, s)
		}
	}
}
