package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/internal/testenv"
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

// TestEgressLiveChange: "egress allow" and "egress revoke" change a running
// workspace's allowlist at once (a revoked name's address handed out
// earlier included), are recorded so that a halted workspace, a fork and a
// restore of a snapshot taken under the old list follow the new one,
// revoking the last name leaves nothing open, and bad input changes
// nothing. Every name resolves through the test's own DNS server on the
// host's loopback (--dns-upstream) to 127.0.0.1, where the test serves
// HTTP on one port opened with --host-access.
func TestEgressLiveChange(t *testing.T) {
	w, ref := vmCLI(t)
	dns := testenv.StartLoopbackDNS(t, "", netip.MustParseAddr("127.0.0.1"))
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, "hello "+r.Host) }))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	reaches := func(ws string, host string, want bool) {
		t.Helper()
		out := w.want(t, 0, "", "exec", ws, "--", "sh", "-c", fmt.Sprintf("timeout 10 wget -q -O - http://%s:%d/ 2>&1; echo", host, port))
		if got := strings.Contains(out, "hello "+host); got != want {
			t.Fatalf("%s reaching %s: %v, want %v: %q", ws, host, got, want, out)
		}
	}
	w.want(t, 0, "", "create", "egr", "--image", ref, "--profile", "tiny", "--disk-size", "256M",
		"--egress-allow", "a.test", fmt.Sprintf("--host-access=%d", port), "--dns-upstream", dns.Addr.String())
	w.want(t, 0, "Started egr", "start", "egr")
	reaches("egr", "a.test", true)
	reaches("egr", "b.test", false)
	standIn := strings.TrimSpace(w.want(t, 0, "", "exec", "egr", "--", "sh", "-c", "nslookup a.test | awk '/^Address/ {a=$NF} END {print a}'"))
	if _, err := netip.ParseAddr(standIn); err != nil {
		t.Fatalf("a.test's address in the guest: %q", standIn)
	}

	w.want(t, 0, "Workspace egr allows a.test b.test (in force now)", "egress", "allow", "egr", "b.test")
	reaches("egr", "b.test", true)
	w.want(t, 0, "Workspace egr allows b.test (in force now)", "egress", "revoke", "egr", "a.test")
	reaches("egr", "a.test", false)
	reaches("egr", standIn, false) // the address handed out before the revocation
	out := w.want(t, 0, "policy changed: egress only b.test", "egress", "egr")
	if !strings.Contains(out, "no longer in the allowlist (revoked)") {
		t.Errorf("egress log: no refusal of the revoked name's address:\n%s", out)
	}

	// Bad input: exit 2 (1 for a missing workspace), nothing changed.
	w.want(t, ExitUsage, "c.test is not in its allowlist (it allows b.test)", "egress", "revoke", "egr", "c.test")
	w.want(t, ExitUsage, "no wildcards", "egress", "allow", "egr", "*.test")
	w.want(t, ExitUsage, "an address, not a name", "egress", "allow", "egr", "203.0.113.7")
	w.want(t, ExitFailure, "no such workspace", "egress", "allow", "nosuch", "c.test")
	w.want(t, 0, "egress only b.test,", "status", "egr")

	w.want(t, 0, "Snapshot egr:s1", "snapshot", "create", "egr", "--tag", "s1")
	w.want(t, 0, "Workspace egr allows nothing (outbound traffic is off) (in force now)", "egress", "revoke", "egr", "b.test")
	reaches("egr", "b.test", false)
	w.want(t, 0, "egress none", "status", "egr")
	w.want(t, 0, "Workspace egr allows c.test (in force now)", "egress", "allow", "egr", "c.test")
	reaches("egr", "c.test", true)

	// A fork of s1 (taken when b.test was allowed) follows the list it
	// is forked with: the one recorded now.
	w.want(t, 0, "Forked egr-fork from egr:s1", "create", "egr-fork", "--from-snapshot", "egr:s1")
	w.want(t, 0, "egress only c.test,", "status", "egr-fork")
	reaches("egr-fork", "c.test", true)
	reaches("egr-fork", "b.test", false)

	// Halted, a change is recorded for the next start; a restore of s1
	// then follows it too.
	w.want(t, 0, "Halted egr", "halt", "egr")
	w.want(t, 0, "Workspace egr allows c.test a.test (in force from its next start)", "egress", "allow", "egr", "a.test")
	w.want(t, 0, "", "start", "egr", "--from-snapshot", "s1")
	reaches("egr", "a.test", true)
	reaches("egr", "b.test", false)
	w.want(t, 0, "", "delete", "--force", "--yes", "egr", "egr-fork")
}
