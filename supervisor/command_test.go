package supervisor

import (
	"os"
	"slices"
	"testing"
)

// TestCommandParses: what Command writes, ParseArgs reads back; other
// command lines (a user's tail of a log, a mangled line) are not a
// supervisor's.
func TestCommandParses(t *testing.T) {
	a := Args{StateDir: "/var/lib/ma", Name: "app", Boot: 7}
	cmd := Command("/usr/bin/microagent", a, os.Stderr, os.Stdin, os.Stdout)
	if !cmd.SysProcAttr.Setsid || len(cmd.ExtraFiles) != 1 || cmd.Dir != "/" {
		t.Fatalf("process attributes: %+v", cmd)
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
