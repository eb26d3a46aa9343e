package cli

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/vmm/usernet"
	"github.com/microagent-dev/microagent/workspace"
)

// TestEgressCLI: a workspace created with --egress-allow-file keeps the list,
// its network refuses an IP literal and another name, and "egress" shows
// both decisions in words and, with --json, as the log's own lines.
func TestEgressCLI(t *testing.T) {
	w, ref := vmCLI(t)
	allow := filepath.Join(t.TempDir(), "allow")
	if err := os.WriteFile(allow, []byte("allowed.test # the one name\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.want(t, 0, "", "create", "egr", "--image", ref, "--profile", "tiny", "--disk-size", "256M", "--egress-allow-file", allow)
	w.want(t, 0, "egress only allowed.test", "status", "egr")
	w.want(t, 0, "Started egr", "start", "egr")
	w.want(t, 0, "", "exec", "egr", "--", "sh", "-c", "timeout 5 nc -w 3 203.0.113.7 443 </dev/null; nslookup other.test; true")
	out := w.want(t, 0, "deny tcp 203.0.113.7:443: not in the allowlist", "egress", "egr")
	if !strings.Contains(out, "deny dns-udp 10.0.2.3:53 other.test.: not in the allowlist") {
		t.Errorf("egress: no refused query for other.test:\n%s", out)
	}
	out = w.want(t, 0, "", "--json", "egress", "egr")
	sc := bufio.NewScanner(strings.NewReader(out))
	n := 0
	for sc.Scan() {
		var ev usernet.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Verdict == "" || ev.Time.IsZero() {
			t.Errorf("egress --json line %q: %+v, %v", sc.Text(), ev, err)
		}
		n++
	}
	if n < 2 {
		t.Errorf("egress --json: %d lines:\n%s", n, out)
	}
	w.want(t, 0, "Halted egr", "halt", "egr")
}

// TestEgressAllowFileBadInput: an allow file that cannot be read fails
// (exit 1) and one with a malformed name is a usage error (exit 2); neither
// creates anything, and the image is never looked at.
func TestEgressAllowFileBadInput(t *testing.T) {
	w := &wsCLI{bin: buildCLI(t), state: t.TempDir()}
	create := []string{"create", "app", "--image", "127.0.0.1:1/none"}
	w.want(t, ExitFailure, "--egress-allow-file", append(create, "--egress-allow-file", filepath.Join(t.TempDir(), "missing"))...)
	bad := filepath.Join(t.TempDir(), "allow")
	if err := os.WriteFile(bad, []byte("# the package index\npypi.org\n*.github.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.want(t, ExitUsage, "no wildcards", append(create, "--egress-allow-file", bad)...)
	if ents, _ := os.ReadDir(filepath.Join(w.state, workspace.Dir)); len(ents) != 0 {
		t.Fatalf("bad input created something: %v", ents)
	}
}
