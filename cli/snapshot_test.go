package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/workspace"
)

// TestSnapshotCommandsBadInput: every refusal a usage error (2) or a
// failure (1) with the reason, nothing created.
func TestSnapshotCommandsBadInput(t *testing.T) {
	w := &wsCLI{bin: buildCLI(t), state: t.TempDir()}
	for _, c := range []struct {
		code int
		msg  string
		args []string
	}{
		{ExitUsage, "invalid snapshot tag", []string{"snapshot", "create", "app", "--tag", "../etc"}},
		{ExitUsage, "invalid snapshot tag", []string{"snapshot", "delete", "app", ".hidden"}},
		{ExitUsage, "invalid snapshot tag", []string{"start", "app", "--from-snapshot", "a/b"}},
		{ExitUsage, "use WORKSPACE:TAG", []string{"create", "fork", "--from-snapshot", "app"}},
		{ExitUsage, "cannot be combined with --from-snapshot", []string{"create", "fork", "--from-snapshot", "app:t", "--image", "x"}},
		{ExitUsage, "cannot be combined with --from-snapshot", []string{"create", "fork", "--from-snapshot", "app:t", "-p", "8080:80"}},
		{ExitUsage, "invalid workspace name", []string{"pause", "Bad!"}},
		{ExitUsage, "accepts 2 arg", []string{"snapshot", "delete", "app"}},
		{ExitFailure, "no such workspace", []string{"pause", "app"}},
		{ExitFailure, "no such workspace", []string{"resume", "app"}},
		{ExitFailure, "no such workspace", []string{"snapshot", "create", "app"}},
		{ExitFailure, "no such workspace", []string{"snapshot", "list", "app"}},
		{ExitFailure, "no such workspace", []string{"create", "fork", "--from-snapshot", "app:t"}},
	} {
		w.want(t, c.code, c.msg, c.args...)
	}
	if ents, _ := os.ReadDir(filepath.Join(w.state, workspace.Dir)); len(ents) != 0 {
		t.Fatalf("bad input changed the state: %v", ents)
	}
}

// TestSnapshotSession runs the transcript through the real binary.
func TestSnapshotSession(t *testing.T) {
	w, ref := vmCLI(t)
	w.want(t, 0, "Created", "create", "builder", "--image", ref, "--profile", "tiny")
	w.want(t, 1, "start it first", "snapshot", "create", "builder", "--tag", "baseline")
	w.want(t, 0, "Started", "start", "builder")
	w.want(t, 0, "", "exec", "builder", "--", "sh", "-c", "echo one > /root/f; sync")

	w.want(t, 0, "Paused builder", "pause", "builder")
	if out := w.want(t, 0, "", "--json", "status", "builder"); !strings.Contains(out, `"state": "paused"`) {
		t.Fatalf("status of a paused workspace: %s", out)
	}
	w.want(t, ExitOwnFailure, "is paused: resume it first", "exec", "builder", "--", "true")
	w.want(t, 0, "Resumed builder", "resume", "builder")

	w.want(t, 0, "Snapshot builder:baseline", "snapshot", "create", "builder", "--tag", "baseline")
	w.want(t, 1, "already has a snapshot", "snapshot", "create", "builder", "--tag", "baseline")
	out := w.want(t, 0, "baseline", "snapshot", "list", "builder")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "TAG") || !strings.Contains(lines[1], ref) {
		t.Fatalf("snapshot list:\n%s", out)
	}
	if out := w.want(t, 0, "", "snapshot", "list", "-q", "builder"); out != "baseline\n" {
		t.Fatalf("snapshot list -q: %q", out)
	}
	// Completion of snapshot tags, and of WS:TAG references in two steps.
	for args, want := range map[string]string{
		"snapshot delete builder ":             "baseline\n:4\n",
		"start builder --from-snapshot ":       "baseline\n:4\n",
		"create fork --from-snapshot ":         "builder:\n:6\n", // 6: no space after the colon
		"create fork --from-snapshot builder:": "builder:baseline\n:4\n",
	} {
		if code, out, _ := w.run(t, "", append([]string{"__complete"}, strings.Split(args, " ")...)...); code != 0 || out != want {
			t.Errorf("__complete %s: exit %d, %q; want %q", args, code, out, want)
		}
	}
	var snaps []workspace.Snapshot
	if err := json.Unmarshal([]byte(w.want(t, 0, "", "--json", "snapshot", "list", "builder")), &snaps); err != nil || len(snaps) != 1 || snaps[0].SizeBytes <= 0 {
		t.Fatalf("snapshot list --json: %v %+v", err, snaps)
	}
	w.want(t, 0, "", "exec", "builder", "--", "sh", "-c", "echo two > /root/f; sync")
	w.want(t, 1, "halt it first", "start", "builder", "--from-snapshot", "baseline")

	w.want(t, 0, "Forked builder-fork from builder:baseline", "create", "builder-fork", "--from-snapshot", "builder:baseline")
	w.want(t, 0, "one", "exec", "builder-fork", "--", "cat", "/root/f")
	w.want(t, 0, "builder-fork", "exec", "builder-fork", "--", "hostname")
	w.want(t, 1, "already exists", "create", "builder-fork", "--from-snapshot", "builder:baseline")

	w.want(t, 0, "Halted", "halt", "builder")
	w.want(t, 1, "has no snapshot", "start", "builder", "--from-snapshot", "nosuch")
	w.want(t, 0, "Started", "start", "builder", "--from-snapshot", "baseline")
	w.want(t, 0, "one", "exec", "builder", "--", "cat", "/root/f")

	w.want(t, 0, "Deleted snapshot builder:baseline", "snapshot", "delete", "builder", "baseline")
	w.want(t, 1, "has no snapshot", "snapshot", "delete", "builder", "baseline")
	if out := w.want(t, 0, "", "--json", "snapshot", "list", "builder"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("list after delete: %q", out)
	}
	w.want(t, 0, "one", "exec", "builder-fork", "--", "cat", "/root/f") // the fork runs on
	w.want(t, 0, "", "delete", "--force", "builder", "builder-fork")
}
