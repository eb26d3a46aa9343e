package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
)

func cli(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// TestUsageErrors: bad input exits 2, except in run and exec, where all of
// microagent's own failures exit 125 (as docker's), so that they are not
// taken for the command's exit code.
func TestUsageErrors(t *testing.T) {
	state := t.TempDir()
	for _, c := range []struct {
		code int
		args []string
	}{
		{ExitOwnFailure, []string{"run"}},
		{ExitUsage, []string{"no-such-command"}},
		{ExitOwnFailure, []string{"run", "--memory", "lots", "img", "true"}},
		{ExitOwnFailure, []string{"run", "--cpus", "0", "--profile", "huge", "img"}},
		{ExitOwnFailure, []string{"run", "--profile", "huge", "img"}},
		{ExitOwnFailure, []string{"run", "--pull", "sometimes", "img"}},
		{ExitOwnFailure, []string{"run", "--rm=false", "img"}},
		{ExitOwnFailure, []string{"run", "-e", "=x", "img"}},
		{ExitOwnFailure, []string{"run", "--no-such-flag", "img"}},
		{ExitOwnFailure, []string{"run", "--output-limit", "10", "img"}},
		{ExitOwnFailure, []string{"--json", "run", "--output-limit", "-1", "img"}},
		{ExitOwnFailure, []string{"exec", "ws"}},
		{ExitOwnFailure, []string{"exec", "ws", "-e", "A=1"}},
		{ExitOwnFailure, []string{"exec", "ws", "--no-such-flag", "true"}},
		{ExitOwnFailure, []string{"--json", "exec", "-t", "ws", "true"}},
		{ExitUsage, []string{"image", "pull"}},
		{ExitUsage, []string{"kernel", "verify", "extra"}},
		{ExitUsage, []string{"list", "-q", "--format", "{{.Name}}"}},
		{ExitUsage, []string{"--json", "ps", "-q"}},
		{ExitUsage, []string{"image", "list", "--format", "{{.Name"}},
	} {
		code, out, errs := cli(t, "", append([]string{"--state-dir", state}, c.args...)...)
		if code != c.code || out != "" || !strings.HasPrefix(errs, "microagent: ") && !strings.HasPrefix(errs, `{"error":`) {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want exit %d and one error", c.args, code, out, errs, c.code)
		}
	}
}

// TestResourceErrors: --cpus 0 is refused rather than meaning the
// profile's count, and a machine larger than this host is refused before
// anything is pulled or booted (it would only hang until the boot timeout).
func TestResourceErrors(t *testing.T) {
	state := t.TempDir()
	cases := [][]string{
		{"--cpus 0: give 1 to 64", "run", "--cpus", "0", "img", "true"},
		{"--cpus 0: give 1 to 64", "create", "ws", "--image", "img", "--cpus", "0"},
	}
	if n := runtime.NumCPU(); n < 64 {
		cases = append(cases,
			[]string{fmt.Sprintf("this host has %d CPUs", n), "run", "--cpus", strconv.Itoa(n + 1), "img", "true"},
			[]string{fmt.Sprintf("this host has %d CPUs", n), "create", "ws", "--image", "img", "--cpus", strconv.Itoa(n + 1)})
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil && uint64(si.Totalram)*uint64(si.Unit) < 256<<30 {
		cases = append(cases, []string{"MiB in all", "run", "--memory", "256G", "img", "true"})
	}
	for _, c := range cases {
		code, out, errs := cli(t, "", append([]string{"--state-dir", state}, c[1:]...)...)
		want := ExitUsage
		if c[1] == "run" {
			want = ExitOwnFailure
		}
		if code != want || out != "" || !strings.Contains(errs, c[0]) {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want exit %d and %q", c[1:], code, out, errs, want, c[0])
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(state, "workspaces")); len(ents) != 0 {
		t.Errorf("a refused create left %v", ents)
	}
}

func TestJSONErrors(t *testing.T) {
	code, _, errs := cli(t, "", "--json", "--state-dir", t.TempDir(), "kernel", "verify", "--name", "absent")
	var v struct {
		Error    string `json:"error"`
		ExitCode int    `json:"exitCode"`
	}
	if code != ExitFailure || json.Unmarshal([]byte(errs), &v) != nil || v.ExitCode != 1 || !strings.Contains(v.Error, "kernel install") {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512": 512 << 20, "512M": 512 << 20, "2G": 2 << 30, "1.5g": 3 << 29, "64MiB": 64 << 20, "1T": 1 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%q: got %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1G", "0"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestRunPassesExitCode drives the real CLI end to end: image pull from a
// real registry, a VM boot, the guest's exit code as the CLI's.
func TestRunPassesExitCode(t *testing.T) {
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	ref := reg.PushBusybox(t, "busybox")
	t.Setenv("MICROAGENT_AGENT", vmenv.Agent(t))
	code, out, errs := cli(t, "piped input", "--state-dir", h.Root, "run", ref, "sh", "-c", "cat; echo; echo to-stderr >&2; exit 42")
	if code != 42 || out != "piped input\n" || errs != "to-stderr\n" {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errs)
	}
	code, _, errs = cli(t, "", "--state-dir", h.Root, "run", ref, "definitely-missing")
	if code != 127 || !strings.Contains(errs, `"definitely-missing" not found in the image`) {
		t.Fatalf("code %d stderr %q", code, errs)
	}
	// --json: one object on stdout, the command's bytes base64 when not
	// UTF-8, stderr cut at --output-limit; a signal is 128+N; flags after
	// the image are the command's (-c is sh's).
	code, out, errs = cli(t, "", "--json", "--state-dir", h.Root, "run", "--output-limit", "4", ref,
		"sh", "-c", `printf '\377\376'; printf 'to-stderr' >&2; kill -USR1 $$`)
	var res resultJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 128+10 || res.ExitCode != 138 || res.Signal != 10 ||
		res.Stdout != (streamJSON{Data: "//4=", Encoding: "base64", Bytes: 2}) ||
		res.Stderr != (streamJSON{Data: "to-s", Encoding: "utf-8", Bytes: 9, Truncated: true}) ||
		res.Timings.BootSeconds <= 0 || res.Timings.TotalSeconds < res.Timings.BootSeconds {
		t.Fatalf("run --json: %v, exit %d, stdout %q, stderr %q", err, code, out, errs)
	}
	// microagent's own failure is 125, not a code the command could give.
	code, _, errs = cli(t, "", "--state-dir", h.Root, "run", "--pull", "never", reg.Ref("absent"), "true")
	if code != ExitOwnFailure || !strings.HasPrefix(errs, "microagent: ") {
		t.Fatalf("run of a missing image: %d %q", code, errs)
	}
	code, out, _ = cli(t, "", "--json", "--state-dir", h.Root, "image", "list")
	if code != 0 || !strings.Contains(out, ref) {
		t.Fatalf("image list: %d %q", code, out)
	}
}
