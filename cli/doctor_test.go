package cli

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// doctor reports every check, as text with a mark per line and as JSON
// with the same verdict as its exit code.
func TestDoctor(t *testing.T) {
	state := t.TempDir()
	code, out, _ := cli(t, "", "--json", "--state-dir", state, "doctor")
	var v struct {
		OK     bool `json:"ok"`
		Checks []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
			Fix    string `json:"fix"`
			Fatal  bool   `json:"fatal"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	var names []string
	for _, c := range v.Checks {
		names = append(names, c.Name)
	}
	want := []string{"qemu", "accelerator", "user network", "mkfs.ext4", "guest agent", "kernel", "state directory", "free disk"}
	if !slices.Equal(names, want) {
		t.Errorf("checks %q, want %q", names, want)
	}
	if (code == 0) != v.OK {
		t.Errorf("exit code %d with ok=%v", code, v.OK)
	}
	code, out, _ = cli(t, "", "--state-dir", state, "doctor")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if (code == 0) != v.OK || !strings.HasPrefix(lines[0], "ok   qemu ") && !strings.HasPrefix(lines[0], "FAIL qemu ") {
		t.Errorf("doctor: exit %d, output:\n%s", code, out)
	}
	if !strings.Contains(out, "warn kernel           not installed") || !strings.Contains(out, "fix: microagent kernel install\n") {
		t.Errorf("doctor does not warn about the missing kernel with its fix:\n%s", out)
	}
}
