package cli

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/vmm/usernet"
)

// TestEgressCLI: a workspace created with --egress-allow keeps the list,
// its network refuses an IP literal and another name, and "egress" shows
// both decisions in words and, with --json, as the log's own lines.
func TestEgressCLI(t *testing.T) {
	w, ref := vmCLI(t)
	w.want(t, 0, "", "create", "egr", "--image", ref, "--profile", "tiny", "--disk-size", "256M", "--egress-allow", "allowed.test")
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
