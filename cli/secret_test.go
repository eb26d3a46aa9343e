package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/vaulttest"
	"github.com/microagent-dev/microagent/secrets"
)

// secretCLI runs "microagent <args>" through Run once the secret command is
// wired into the root, else through an equivalent root built here.
func secretCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	if c, _, err := NewRoot(nil, io.Discard, io.Discard).Find([]string{"secret", "check"}); err == nil && c.Name() == "check" {
		return cli(t, "", args...)
	}
	var out, errb bytes.Buffer
	g := &globals{stdout: &out, stderr: &errb, stdin: strings.NewReader("")}
	root := &cobra.Command{Use: "microagent", SilenceUsage: true, SilenceErrors: true}
	root.SetOut(&out)
	root.SetErr(&errb)
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", "", "")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "")
	root.AddCommand(newSecretCmd(g))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return ExitOK, out.String(), errb.String()
	}
	if jsonRequested(args) {
		json.NewEncoder(&errb).Encode(map[string]any{"error": err.Error(), "exitCode": exitCode(err)})
	} else {
		fmt.Fprintf(&errb, "microagent: %v\n", err)
	}
	return exitCode(err), out.String(), errb.String()
}

// noLeak fails when any output contains the secret; it never prints it.
func noLeak(t *testing.T, secret string, outputs ...string) {
	t.Helper()
	for i, o := range outputs {
		if strings.Contains(o, secret) {
			t.Errorf("output %d contains the secret value", i)
		}
	}
}

func TestSecretCheckSpec(t *testing.T) {
	const token = "tk-demo-0123456789abcdef0123456789abcdef"
	t.Setenv("API_TOKEN", token)
	code, out, errs := secretCLI(t, "secret", "check", "API_KEY=env:API_TOKEN")
	want := `API_KEY ok source=env bytes=40 warning: secret scheme "env" is plaintext: not encrypted at rest, not for production` + "\n"
	if code != 0 || out != want || errs != "" {
		t.Fatalf("code %d\nstdout %q\nstderr %q", code, out, errs)
	}
	noLeak(t, token, out, errs)
}

func TestSecretCheckFailures(t *testing.T) {
	const token = "tk-demo-0123456789abcdef0123456789abcdef"
	t.Setenv("API_TOKEN", token)
	t.Setenv("EMPTY_VAR", "")
	os.Unsetenv("NOT_SET_VAR")
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	os.WriteFile(file, []byte("file-s3cret-value\n"), 0o600)
	args := []string{"secret", "check",
		"API_KEY=env:API_TOKEN",
		"MISSING=env:NOT_SET_VAR",
		"EMPTY=env:EMPTY_VAR",
		"TYPO=evn:API_TOKEN",
		"PASTED=pasted-s3cret-value",
		"bad-name=env:API_TOKEN",
		"API_KEY=env:API_TOKEN",
		"FILE=file:" + file,
		"NOFILE=file:" + filepath.Join(dir, "none"),
	}
	code, out, errs := secretCLI(t, args...)
	want := strings.Join([]string{
		`API_KEY ok source=env bytes=40 warning: secret scheme "env" is plaintext: not encrypted at rest, not for production`,
		`MISSING error environment variable NOT_SET_VAR is not set: export it in the shell that runs microagent`,
		`EMPTY error environment variable EMPTY_VAR is set but empty`,
		`TYPO error unknown scheme (known: dotenv, env, file, helper, k8s, vault): want <scheme>:<ref>, e.g. env:VAR`,
		`PASTED error reference has no scheme: want <scheme>:<ref>, e.g. env:VAR or file:PATH`,
		`#6 error secret name must match [A-Za-z_][A-Za-z0-9_]* (at most 255 bytes): letters, digits and '_', not starting with a digit`,
		`API_KEY error declared twice (--secret env:API_TOKEN and --secret env:API_TOKEN)`,
		`FILE ok source=file bytes=18 warning: secret scheme "file" is plaintext: not encrypted at rest, not for production`,
		`NOFILE error file ` + filepath.Join(dir, "none") + ` does not exist`,
	}, "\n") + "\n"
	if code != ExitFailure || out != want || errs != "microagent: 7 of 9 secret references failed\n" {
		t.Fatalf("code %d\nstdout:\n%s\nwant:\n%s\nstderr %q", code, out, want, errs)
	}
	noLeak(t, token, out, errs)
	noLeak(t, "pasted-s3cret", out, errs)
	noLeak(t, "file-s3cret", out, errs)

	// --json: one object per entry, never the value.
	code, out, errs = secretCLI(t, append([]string{"--json"}, args...)...)
	var res []map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != ExitFailure || len(res) != 9 {
		t.Fatalf("json: code %d, %v\n%s", code, err, out)
	}
	if res[0]["name"] != "API_KEY" || res[0]["ok"] != true || res[0]["source"] != "env" || res[0]["bytes"] != 40.0 ||
		!strings.Contains(res[0]["warning"].(string), "plaintext") {
		t.Fatalf("json ok entry %v", res[0])
	}
	if res[1]["ok"] != false || res[1]["error"] == nil || res[1]["source"] != "env" {
		t.Fatalf("json error entry %v", res[1])
	}
	var e struct {
		Error    string `json:"error"`
		ExitCode int    `json:"exitCode"`
	}
	if json.Unmarshal([]byte(errs), &e) != nil || e.ExitCode != 1 {
		t.Fatalf("json stderr %q", errs)
	}
	noLeak(t, token, out, errs)
	noLeak(t, "pasted-s3cret", out, errs)
	noLeak(t, "file-s3cret", out, errs)
	// An unknown scheme is never quoted, nor given as the source: it may
	// be the start of a pasted value.
	if res[3]["source"] != nil || strings.Contains(out, "evn") {
		t.Fatalf("the unknown scheme is shown: %v\n%s", res[3], out)
	}

	// No arguments is a usage error.
	if code, _, _ := secretCLI(t, "secret", "check"); code != ExitUsage {
		t.Fatalf("no args: code %d", code)
	}
}

func TestSecretCheckVault(t *testing.T) {
	srv := vaulttest.Start(t)
	const value = "vault-cli-s3cret-value"
	srv.PutKV(t, "secret", "app", map[string]any{"password": value})
	t.Setenv("VAULT_ADDR", srv.Addr)
	t.Setenv("VAULT_TOKEN", srv.RootToken)
	code, out, errs := secretCLI(t, "secret", "check", "DB=vault:secret/data/app#password", "NOFIELD=vault:secret/data/app#user")
	want := "DB ok source=vault bytes=22\n" +
		"NOFIELD error vault secret/data/app at " + srv.Addr + ` has no field "user" (fields: password)` + "\n"
	if code != ExitFailure || out != want {
		t.Fatalf("code %d\nstdout %q\nwant %q\nstderr %q", code, out, want, errs)
	}
	t.Setenv("VAULT_TOKEN", srv.ReadToken(t, "secret/data/other"))
	_, out, errs = secretCLI(t, "secret", "check", "DB=vault:secret/data/app#password")
	if !strings.HasPrefix(out, "DB error vault at "+srv.Addr+" denied reading secret/data/app (HTTP 403: permission denied): check that VAULT_TOKEN") {
		t.Fatalf("denied: %q", out)
	}
	noLeak(t, value, out, errs)
	t.Logf("denied line: %s", strings.TrimSpace(out))
}

func TestSecretAudit(t *testing.T) {
	state := t.TempDir()
	h := home.Home{Root: state}
	code, _, errs := secretCLI(t, "--state-dir", state, "secret", "audit", "vaulted")
	if code != ExitFailure || !strings.Contains(errs, `no workspace "vaulted"`) {
		t.Fatalf("no workspace: %d %q", code, errs)
	}
	os.MkdirAll(h.Path(audit.WorkspacesDir, "plain"), 0o700)
	code, _, errs = secretCLI(t, "--state-dir", state, "secret", "audit", "plain")
	if code != ExitFailure || !strings.Contains(errs, "has no secrets audit log") || !strings.Contains(errs, "--secrets-audit") {
		t.Fatalf("no log: %d %q", code, errs)
	}
	for _, bad := range []string{"..", "a/b", "."} {
		if code, _, _ := secretCLI(t, "--state-dir", state, "secret", "audit", bad); code != ExitUsage {
			t.Fatalf("workspace %q: code %d", bad, code)
		}
	}

	l, err := audit.Open(audit.PathFor(h, "vaulted"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	at := time.Date(2026, 6, 11, 9, 16, 32, 221898563, time.UTC)
	l.Append(audit.Record{Time: at, Name: "DB_PASSWORD", Access: audit.OnDemand, Result: audit.OK})
	l.Append(audit.Record{Time: at.Add(time.Second), Name: "DB_PASSWORD", Access: audit.OnDemand, Result: audit.Denied, Reason: "vault denied"})
	v := secrets.NewValue([]byte("audited-s3cret-value"))
	l.Gate("API_KEY", audit.Boot, v, nil)

	code, out, errs := secretCLI(t, "--state-dir", state, "secret", "audit", "vaulted")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || lines[0] != "2026-06-11T09:16:32.221898563Z DB_PASSWORD on-demand ok" ||
		lines[1] != "2026-06-11T09:16:33.221898563Z DB_PASSWORD on-demand denied" || !strings.HasSuffix(lines[2], " API_KEY boot ok") {
		t.Fatalf("audit: %d\n%s\n%s", code, out, errs)
	}
	noLeak(t, "audited-s3cret-value", out, errs)

	code, out, _ = secretCLI(t, "--json", "--state-dir", state, "secret", "audit", "vaulted")
	var recs []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &recs) != nil || len(recs) != 3 || recs[1]["reason"] != "vault denied" || recs[0]["time"] != "2026-06-11T09:16:32.221898563Z" {
		t.Fatalf("audit --json: %d %s", code, out)
	}

	code, out, _ = secretCLI(t, "--state-dir", state, "secret", "audit", "vaulted", "--verify")
	if code != 0 || !strings.HasPrefix(out, "ok: 3 records, hash chain intact") || !strings.Contains(out, "see --head") {
		t.Fatalf("verify: %d %q", code, out)
	}
	// The head, exported; later checked against the log.
	code, out, _ = secretCLI(t, "--state-dir", state, "secret", "audit", "vaulted", "--head")
	head := strings.TrimSpace(out)
	if code != 0 || audit.CheckHead(head) != nil {
		t.Fatalf("--head: %d %q", code, out)
	}
	code, out, _ = secretCLI(t, "--state-dir", state, "secret", "audit", "vaulted", "--verify", "--expect-head", head)
	if code != 0 || out != "ok: 3 records, hash chain intact, leads through the expected head (record 3; 0 recorded since)\n" {
		t.Fatalf("verify --expect-head: %d %q", code, out)
	}
	for _, args := range [][]string{{"--expect-head", "nothex"}, {"--head", "--verify"}} {
		if code, _, errs := secretCLI(t, append([]string{"--state-dir", state, "secret", "audit", "vaulted"}, args...)...); code != ExitUsage {
			t.Fatalf("%v: %d %q", args, code, errs)
		}
	}
	// Whoever can write the log rebuilds it whole (here: drops the last
	// record, which leaves a consistent chain): the exported head shows it.
	p := audit.PathFor(h, "vaulted")
	raw, _ := os.ReadFile(p)
	os.WriteFile(p, raw[:bytes.LastIndexByte(raw[:len(raw)-1], '\n')+1], 0o600)
	if code, _, _ := secretCLI(t, "--state-dir", state, "secret", "audit", "vaulted", "--verify"); code != 0 {
		t.Fatalf("the shortened log fails --verify alone: %d", code)
	}
	code, _, errs = secretCLI(t, "--state-dir", state, "secret", "audit", "vaulted", "--verify", "--expect-head", head)
	if code != ExitFailure || !strings.Contains(errs, "does not lead to the expected head") {
		t.Fatalf("verify --expect-head of a rewritten log: %d %q", code, errs)
	}
	os.WriteFile(p, raw, 0o600)
	// Tamper: turn the denial into a success.
	os.WriteFile(p, bytes.Replace(raw, []byte(`"result":"denied"`), []byte(`"result":"ok"`), 1), 0o600)
	code, out, errs = secretCLI(t, "--state-dir", state, "secret", "audit", "vaulted", "--verify")
	if code != ExitFailure || out != "" || errs != "microagent: secrets audit log of vaulted is broken at record 2: record 2: hash mismatch: the record was modified\n" {
		t.Fatalf("tampered verify: %d %q %q", code, out, errs)
	}
	code, out, _ = secretCLI(t, "--json", "--state-dir", state, "secret", "audit", "vaulted", "--verify")
	var rep map[string]any
	if code != ExitFailure || json.Unmarshal([]byte(out), &rep) != nil || rep["ok"] != false || rep["firstBad"] != 2.0 {
		t.Fatalf("tampered verify --json: %d %s", code, out)
	}
}
