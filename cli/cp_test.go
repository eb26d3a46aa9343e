package cli

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/workspace"
)

func TestCpAndFileBadInput(t *testing.T) {
	w := &wsCLI{bin: buildCLI(t), state: t.TempDir()}
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, []byte("x"), 0o644)
	for _, c := range []struct {
		code int
		msg  string
		args []string
	}{
		{ExitUsage, "both", []string{"cp", "a:/x", "b:/y"}},
		{ExitUsage, "neither", []string{"cp", f, "./y"}},
		{ExitUsage, "not absolute", []string{"cp", f, "app:rel/path"}},
		{ExitUsage, "not absolute", []string{"cp", "app:rel", dir}},
		{ExitUsage, "invalid workspace name", []string{"cp", f, "Bad!:/x"}},
		{ExitUsage, "--chown applies", []string{"cp", "--chown", "1", "app:/x", dir}},
		{ExitUsage, "--archive keeps owners", []string{"cp", "-a", "--chown", "1", f, "app:/x"}},
		{ExitUsage, "accepts 2 arg", []string{"cp", f}},
		{ExitFailure, "no such file", []string{"cp", filepath.Join(dir, "missing"), "app:/x"}},
		{ExitFailure, "no such workspace", []string{"cp", f, "app:/x"}},
		{ExitFailure, "no such workspace", []string{"cp", "app:/x", dir}},
		{ExitUsage, "not absolute", []string{"create", "app", "--image", "x", "--file", f + ":rel"}},
		{ExitUsage, "no such file", []string{"create", "app", "--image", "x", "--file", filepath.Join(dir, "nope") + ":/x"}},
		{ExitUsage, "octal", []string{"create", "app", "--image", "x", "--file", f + ":/x:999"}},
		{ExitUsage, "HOST:GUEST", []string{"create", "app", "--image", "x", "--file", f}},
		{ExitOwnFailure, "no such file", []string{"run", "--file", filepath.Join(dir, "nope") + ":/x", "img"}},
		{ExitOwnFailure, "not absolute", []string{"run", "--file", f + ":x:0600", "img"}},
	} {
		w.want(t, c.code, c.msg, c.args...)
	}
	if ents, _ := os.ReadDir(filepath.Join(w.state, workspace.Dir)); len(ents) != 0 {
		t.Fatalf("bad input changed the state: %v", ents)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("bad input changed the host directory: %v", ents)
	}
}

func TestCpStatsSaySkipped(t *testing.T) {
	got := statsHuman(tarcopy.Stats{Files: 2, Bytes: 10, Skipped: 3})
	if want := "2 files (10 bytes); skipped 3 device node(s) or FIFO(s), which a copy out of a workspace never creates"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseFileSpec(t *testing.T) {
	f := filepath.Join(t.TempDir(), "a:b")
	os.WriteFile(f, nil, 0o600)
	for in, want := range map[string]tarcopy.FileSpec{
		f + ":/etc/x":      {Host: f, Guest: "/etc/x"},
		f + ":/etc/x:0640": {Host: f, Guest: "/etc/x", Mode: 0o640, SetMode: true},
		f + ":/etc/x:0":    {Host: f, Guest: "/etc/x", SetMode: true},
	} {
		got, err := tarcopy.ParseFileSpec(in)
		if err != nil || got != want {
			t.Errorf("%q: got %+v %v, want %+v", in, got, err, want)
		}
	}
}

// TestCpSession copies with the CLI to and from a running workspace, with
// --file at create and at run.
func TestCpSession(t *testing.T) {
	w, ref := vmCLI(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(`{"a":1}`), 0o644)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	os.WriteFile(filepath.Join(tree, "sub", "x"), []byte("x"), 0o640)
	os.Symlink("sub/x", filepath.Join(tree, "link"))

	// create --file: stored now, put in by the first start.
	w.want(t, 0, "Created", "create", "app", "--image", ref, "--profile", "tiny", "--disk-size", "200M",
		"--file", cfg+":/etc/app/config.json:0600", "--file", tree+":/opt/tree")
	os.WriteFile(cfg, []byte("changed after create"), 0o644)
	w.want(t, ExitFailure, "start app", "cp", cfg, "app:/tmp/")
	w.want(t, 0, "Started", "start", "app")
	check := `stat -c '%a %u' /etc/app/config.json && cat /etc/app/config.json && echo && cat /opt/tree/sub/x && readlink /opt/tree/link`
	if code, out, errs := w.run(t, "", "exec", "app", "--", "sh", "-c", check); code != 0 || out != "600 0\n{\"a\":1}\nxsub/x\n" {
		t.Fatalf("--file at create: %d %q %q", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(w.state, workspace.Dir, "app", "files")); !os.IsNotExist(err) {
		t.Fatalf("delivered files not forgotten: %v", err)
	}

	// cp both ways, with "-" tar streams.
	w.want(t, 0, "Copied 1 file (", "cp", cfg, "app:/tmp/")
	w.want(t, 0, "Copied 1 file, 2 directories, 1 symlink (1 bytes)", "cp", "app:/opt/tree", filepath.Join(dir, "back"))
	if b, err := os.ReadFile(filepath.Join(dir, "back", "sub", "x")); err != nil || string(b) != "x" {
		t.Fatalf("cp out: %q %v", b, err)
	}
	code, tarball, errs := w.run(t, "", "cp", "app:/opt/tree/.", "-")
	if code != 0 {
		t.Fatalf("cp to -: %d %s", code, errs)
	}
	names := tarNames(t, tarball)
	if strings.Join(names, " ") != "./ link sub/ sub/x" {
		t.Fatalf("cp to -: entries %v", names)
	}
	if code, _, errs := w.run(t, tarball, "cp", "-", "app:/tmp"); code != 0 {
		t.Fatalf("cp from -: %d %s", code, errs)
	}
	if code, out, _ := w.run(t, "", "exec", "app", "--", "cat", "/tmp/sub/x", "/tmp/config.json"); code != 0 || out != "xchanged after create" {
		t.Fatalf("after cp: %d %q", code, out)
	}
	var st tarcopy.Stats
	out := w.want(t, 0, "", "--json", "cp", "--chown", "1000:1000", "--parents", cfg, "app:/home/u/c.json")
	if json.Unmarshal([]byte(out), &st) != nil || st.Files != 1 {
		t.Fatalf("cp --json: %q", out)
	}
	if code, out, _ := w.run(t, "", "exec", "app", "--", "stat", "-c", "%u:%g", "/home/u/c.json"); code != 0 || out != "1000:1000\n" {
		t.Fatalf("--chown: %d %q", code, out)
	}
	w.want(t, ExitFailure, "no such file", "cp", "app:/no/such", dir)
	w.want(t, ExitFailure, "cannot copy a directory onto the file", "cp", "app:/opt/tree", cfg)
	w.want(t, ExitFailure, "not a directory", "cp", cfg, "app:/etc/app/config.json/")

	// A halted workspace is refused with what to do; files are not
	// delivered again by a later start.
	w.want(t, 0, "Halted", "halt", "app")
	w.want(t, ExitFailure, `run "microagent start app" first`, "cp", "app:/tmp/config.json", dir)
	w.want(t, 0, "Started", "start", "app")
	if code, out, _ := w.run(t, "", "exec", "app", "--", "cat", "/opt/tree/sub/x"); code != 0 || out != "x" {
		t.Fatalf("after restart: %d %q", code, out)
	}
	w.want(t, 0, "Killed", "kill", "app")

	// run --file: in place before the command, owned by its user.
	if code, out, errs := w.run(t, "", "run", "--file", cfg+":/data/in/c:0640", "--user", "1234", ref,
		"sh", "-c", "stat -c '%a %u' /data/in/c; cat /data/in/c"); code != 0 || out != "640 1234\nchanged after create" {
		t.Fatalf("run --file: %d %q %q", code, out, errs)
	}
}

func tarNames(t *testing.T, s string) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader([]byte(s)))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		names = append(names, h.Name)
	}
}
