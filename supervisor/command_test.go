package supervisor

import (
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestCommandParses: what Command writes, ParseArgs reads back; other
// command lines (a user's tail of a log, a mangled line) are not a
// supervisor's.
func TestCommandParses(t *testing.T) {
	a := Args{StateDir: "/var/lib/ma", Name: "app", Boot: 7}
	cmd := Command("/usr/bin/microagent", a, os.Stderr, os.Stdin, os.Stdout, nil)
	if !cmd.SysProcAttr.Setsid || len(cmd.ExtraFiles) != 1 || cmd.Dir != "/" {
		t.Fatalf("process attributes: %+v", cmd)
	}
	// Its own environment is PATH and the locale, whatever ours holds.
	t.Setenv("VAULT_TOKEN", "tok-in-the-start-command")
	for _, kv := range Command("/usr/bin/microagent", a, os.Stderr, os.Stdin, os.Stdout, nil).Env {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains([]string{"PATH", "LANG", "LC_ALL", "TZ"}, k) {
			t.Errorf("the supervisor's own environment has %s", kv)
		}
	}
	f, err := EnvFile([]string{"A=1", "B=x=y"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if cmd := Command("/usr/bin/microagent", a, os.Stderr, os.Stdin, os.Stdout, f); len(cmd.ExtraFiles) != envFD-2 || cmd.ExtraFiles[envFD-3] != f {
		t.Fatalf("the environment file is not descriptor %d: %v", envFD, cmd.ExtraFiles)
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != "A=1\x00B=x=y\x00" {
		t.Fatalf("EnvFile holds %q, %v", b, err)
	}
	got, ok := ParseArgs(cmd.Args)
	if !ok || got != a {
		t.Fatalf("ParseArgs(%q) = %+v %v", cmd.Args, got, ok)
	}
	for _, bad := range [][]string{
		nil,
		{"tail", "-f", "/var/lib/ma/workspaces/app/logs/supervisor.log"},
		slices.Replace(slices.Clone(cmd.Args), 6, 7, "x"),
		slices.Replace(slices.Clone(cmd.Args), 6, 7, "0"),
		slices.Replace(slices.Clone(cmd.Args), 3, 4, "start"),
		slices.Replace(slices.Clone(cmd.Args), 4, 5, ""),
		append(slices.Clone(cmd.Args), "extra"),
	} {
		if _, ok := ParseArgs(bad); ok {
			t.Errorf("ParseArgs(%q) accepted", bad)
		}
	}
}
