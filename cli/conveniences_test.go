package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/workspace"
)

// TestCLIConveniences drives what container users expect of the real
// binary on a created (not booted) workspace: --version, -q and --format,
// the aliases, completion of workspace names and image references, and
// delete -f off a terminal, twice.
func TestCLIConveniences(t *testing.T) {
	w, ref := vmCLI(t)

	out := w.want(t, 0, "microagent ", "--version")
	if !strings.Contains(out, "go: "+runtime.Version()) || !strings.Contains(out, "qemu: found (") {
		t.Fatalf("--version: %q", out)
	}
	var v versionJSON
	if err := json.Unmarshal([]byte(w.want(t, 0, "", "--json", "version")), &v); err != nil || v.Go != runtime.Version() || !v.VMM.Found || v.VMM.Name != "qemu" {
		t.Fatalf("version --json: %v %+v", err, v)
	}

	w.want(t, 0, "Created", "create", "app", "--image", ref, "--profile", "tiny")
	for _, c := range []struct{ want, args string }{
		{"app\n", "list -q"},
		{"", "ps -q"},
		{"app\tcreated\ttiny\n", "ls --format {{.Name}}\\t{{.State}}\\t{{.Profile}}"},
		{"app 128\n", "status app --format {{.Name}}\\x20{{.Resources.MemoryMiB}}"},
		{ref + "\n", "images -q"},
		{ref + "\n", "image list --format {{.Ref}}"},
		{"", "snapshot list -q app"},
		// cobra's protocol: candidates one a line, then the directive.
		{"app\n:4\n", "__complete exec "},
		{"app\n:4\n", "__complete rm "},
		{":0\n", "__complete exec app "}, // the command: the shell's own completion
		{ref + "\n:4\n", "__complete run "},
		{ref + "\n:4\n", "__complete create x --image "},
		{":4\n", "__complete create x --from-snapshot "}, // no snapshots yet
	} {
		args := strings.Split(c.args, " ")
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, `\x20`, " ")
		}
		if code, out, errs := w.run(t, "", args...); code != 0 || out != c.want {
			t.Errorf("%s: exit %d, stdout %q (stderr %q), want %q", c.args, code, out, errs, c.want)
		}
	}
	w.want(t, ExitUsage, "can't evaluate field Nope", "list", "--format", "{{.Nope}}")

	var inf workspace.Info
	if err := json.Unmarshal([]byte(w.want(t, 0, "", "--json", "inspect", "app")), &inf); err != nil || inf.Name != "app" {
		t.Fatalf("inspect --json: %v %+v", err, inf)
	}
	w.want(t, 0, "Halted app", "stop", "app")

	// Off a terminal (stdin is a pipe here), -f asks nothing; a second
	// delete -f, and one of a name never created, succeed as docker rm -f.
	w.want(t, 0, "Deleted app", "delete", "-f", "app")
	for _, args := range [][]string{{"delete", "-f", "app"}, {"rm", "--force", "app", "never"}} {
		if code, out, errs := w.run(t, "", args...); code != 0 || out != "" || errs != "" {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	w.want(t, ExitFailure, "no such workspace", "delete", "--yes", "app")
	if ents, _ := os.ReadDir(filepath.Join(w.state, workspace.Dir)); len(ents) != 0 {
		t.Fatalf("left after delete: %v", ents)
	}
}
