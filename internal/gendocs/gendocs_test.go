package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestDocsMatchTheCode regenerates the CLI reference and compares it with
// docs/cli, file by file: a command, flag or help text changed without
// "make docs" fails here.
func TestDocsMatchTheCode(t *testing.T) {
	fresh := t.TempDir()
	if err := generate(fresh); err != nil {
		t.Fatal(err)
	}
	want, got := pages(t, fresh), pages(t, filepath.Join("..", "..", "docs", "cli"))
	for name, b := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("docs/cli/%s is missing: run make docs", name)
		} else if !bytes.Equal(g, b) {
			t.Errorf("docs/cli/%s differs from what the code generates: run make docs", name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("docs/cli/%s is no longer generated (a command was removed or renamed): run make docs", name)
		}
	}
}

// TestGenerateReplacesStalePages: a page of a command that is gone is
// removed; other files in the folder stay.
func TestGenerateReplacesStalePages(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"microagent_gone.md", "man/microagent-gone.1", "README.md"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := generate(dir); err != nil {
		t.Fatal(err)
	}
	p := pages(t, dir)
	if _, ok := p["microagent_gone.md"]; ok {
		t.Error("a stale Markdown page stayed")
	}
	if _, ok := p["man/microagent-gone.1"]; ok {
		t.Error("a stale man page stayed")
	}
	if _, ok := p["README.md"]; !ok {
		t.Error("a file gendocs does not write was removed")
	}
	for _, n := range []string{"microagent_run.md", "man/microagent-run.1"} {
		if _, ok := p[n]; !ok {
			t.Errorf("%s not generated", n)
		}
	}
}

// pages reads every file under dir by its slash-separated relative path.
func pages(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
