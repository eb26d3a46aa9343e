package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/workspace"
)

// The secrets of named workspaces, tested through the real binary: the
// user's spec transcript, the fail-closed starts, a leak scan of the whole
// state directory, and the audit log.

// The spec's images, served from a local registry as docker.io mirrors:
// alpine is the busybox fixture, python:3.12-alpine the fixture with a real
// python3.
const (
	specAlpine = "docker.io/library/alpine:3.20"
	specPython = "docker.io/library/python:3.12-alpine"
)

// fetchPy asks the guest's secrets socket for each name in argv and prints
// each reply line, as the spec's one-liner does.
const fetchPy = `import socket,os,sys
for n in sys.argv[1:]:
    s=socket.socket(socket.AF_UNIX); s.connect(os.environ['MICROAGENT_SECRETS_SOCK']); s.sendall(b'GET '+n.encode()+b'\n'); print(s.recv(4096).decode().strip())`

func secretsCLI(t *testing.T) *wsCLI {
	t.Helper()
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	reg.PushImage(t, "library/alpine:3.20", testenv.BusyboxImage(t))
	reg.PushImage(t, "library/python:3.12-alpine", testenv.PythonImage(t))
	t.Setenv("MICROAGENT_REGISTRY_MIRRORS", "docker.io="+reg.URL)
	t.Setenv("MICROAGENT_AGENT", vmenv.Agent(t))
	w := &wsCLI{bin: buildCLI(t), state: h.Root}
	t.Cleanup(func() {
		w.killLive(t)
		if ps := stateProcs(w.state); len(ps) > 0 {
			t.Errorf("processes left behind: %v", ps)
		}
	})
	return w
}

// stateProcs lists the live processes (QEMU, supervisors) whose command
// line names the state directory.
func stateProcs(state string) []string {
	var out []string
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(state)) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat")); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] == 'Z' {
				continue
			}
		}
		out = append(out, strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " "))
	}
	return out
}

// qemuPIDs returns the PIDs of QEMU processes of the state directory.
func qemuPIDs(state string) []string {
	var out []string
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(state)) && bytes.Contains(b, []byte("qemu-system")) {
			out = append(out, filepath.Base(filepath.Dir(p)))
		}
	}
	return out
}

const plainWarning = `warning: secret scheme %q is plaintext: not encrypted at rest, not for production`

// TestWorkspaceSecretsSpec runs the workspace part of the spec transcript
// ("Deliver secrets") command by command, with its outputs.
func TestWorkspaceSecretsSpec(t *testing.T) {
	w := secretsCLI(t)

	t.Setenv("API_TOKEN", "tk-demo-0123456789abcdef0123456789abcdef")
	code, out, errs := w.run(t, "", "secret", "check", "API_KEY=env:API_TOKEN")
	if want := "API_KEY ok source=env bytes=40 " + fmt.Sprintf(plainWarning, "env") + "\n"; code != 0 || out != want {
		t.Fatalf("secret check: exit %d\n got %q\nwant %q\nstderr %q", code, out, want, errs)
	}

	envFile := filepath.Join(t.TempDir(), "app.env")
	if err := os.WriteFile(envFile, []byte("DB_PASSWORD=hunter2-but-longer\nAPP_ENV=dev\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.want(t, 0, "Created workspace app", "create", "app", "--image", specAlpine, "--secrets-env-file", envFile)
	code, _, errs = w.run(t, "", "start", "app")
	if code != 0 || errs != fmt.Sprintf(plainWarning, "dotenv")+"\n" {
		t.Fatalf("start app: exit %d, stderr %q", code, errs)
	}
	if code, out, errs := w.run(t, "", "exec", "app", "--", "ls", "/run/secrets"); code != 0 || out != "APP_ENV\nDB_PASSWORD\n" {
		t.Fatalf("exec app -- ls /run/secrets: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	w.want(t, 0, "Created workspace vaulted", "create", "vaulted", "--image", specPython,
		"--secret-on-demand", "DB_PASSWORD=dotenv:"+envFile+"#DB_PASSWORD", "--secrets-audit")
	if out := w.want(t, 0, "", "secret", "audit", "vaulted"); out != "" {
		t.Fatalf("audit log before any access: %q", out)
	}
	w.want(t, 0, "Started vaulted", "start", "vaulted")
	code, out, errs = w.run(t, "", "exec", "vaulted", "--", "python3", "-c",
		"import socket,os; s=socket.socket(socket.AF_UNIX); s.connect(os.environ['MICROAGENT_SECRETS_SOCK']); s.sendall(b'GET DB_PASSWORD\\n'); print(s.recv(4096).decode())")
	if want := `{"ok":true,"value":"aHVudGVyMi1idXQtbG9uZ2Vy"}`; code != 0 || strings.TrimRight(out, "\n") != want {
		t.Fatalf("on-demand fetch: exit %d, stdout %q, stderr %q; want %s", code, out, errs, want)
	}
	out = w.want(t, 0, "", "secret", "audit", "vaulted")
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z DB_PASSWORD on-demand ok\n$`).MatchString(out) {
		t.Fatalf("secret audit vaulted: %q", out)
	}

	for _, n := range []string{"app", "vaulted"} {
		w.want(t, 0, "Halted "+n, "halt", n)
		w.want(t, 0, "Deleted "+n, "delete", n, "--yes")
	}
	os.Remove(envFile)
	if ps := stateProcs(w.state); len(ps) > 0 {
		t.Fatalf("processes left: %v", ps)
	}
}

// TestWorkspaceSecretsFailClosed: a start whose secrets cannot all be
// resolved fails naming the secret, boots nothing, and leaves the
// workspace (state and manifest) as it was.
func TestWorkspaceSecretsFailClosed(t *testing.T) {
	w := secretsCLI(t)
	dir := t.TempDir()
	envFile := filepath.Join(dir, "app.env")
	if err := os.WriteFile(envFile, []byte("PRESENT=yes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A full MiB: one sealed channel frame cannot carry it, so resolution
	// refuses it, before boot (issue #11: it used to fail after boot).
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte{'b'}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := "http://" + ln.Addr().String()
	ln.Close() // a port nothing listens on: the backend is down
	t.Setenv("EMPTY_VAR", "")
	t.Setenv("VAULT_ADDR", closedAddr)
	t.Setenv("VAULT_TOKEN", "test-token")

	wsDir := filepath.Join(w.state, workspace.Dir, "fc")
	w.want(t, 0, "Created", "create", "fc", "--image", specAlpine, "--profile", "tiny", "--disk-size", "300M",
		"--secret", "LATER=env:LATER_VAR")
	manifest, _ := os.ReadFile(filepath.Join(wsDir, "manifest.json"))

	// check runs a start that must fail: non-zero, naming the secret and
	// the reason, no QEMU launched, state and manifest unchanged.
	check := func(state workspace.State, name, reason string, code int, args ...string) {
		t.Helper()
		supLog, _ := os.ReadFile(filepath.Join(wsDir, "logs", "supervisor.log"))
		boots := bytes.Count(supLog, []byte("booting workspace"))
		c, out, errs := w.run(t, "", append([]string{"start", "fc"}, args...)...)
		if c != code || !strings.Contains(errs, "secret "+name) || !strings.Contains(errs, reason) {
			t.Fatalf("start fc %v: exit %d, stdout %q, stderr %q; want exit %d naming %s and %q", args, c, out, errs, code, name, reason)
		}
		t.Logf("start fc %v: %s", args, strings.TrimSpace(errs))
		if ps := stateProcs(w.state); len(ps) > 0 {
			t.Fatalf("processes after a failed start: %v", ps)
		}
		supLog, _ = os.ReadFile(filepath.Join(wsDir, "logs", "supervisor.log"))
		if bytes.Count(supLog, []byte("booting workspace")) != boots {
			t.Fatalf("a VM was booted for a start whose secrets failed:\n%s", supLog)
		}
		var inf workspace.Info
		_, sout, _ := w.run(t, "", "--json", "status", "fc")
		if json.Unmarshal([]byte(sout), &inf) != nil || inf.State != state || inf.Reason != "" {
			t.Fatalf("after the failed start: %s; want %s", sout, state)
		}
		if m, _ := os.ReadFile(filepath.Join(wsDir, "manifest.json")); !bytes.Equal(m, manifest) {
			t.Fatalf("the manifest changed:\n%s\nwas\n%s", m, manifest)
		}
	}

	// A reference stored at create, resolved in the start command's
	// environment.
	check(workspace.Created, "LATER", "LATER_VAR is not set", 1)
	if _, err := os.Stat(filepath.Join(wsDir, "logs", "console.log")); err == nil {
		t.Fatal("a console log exists: QEMU ran")
	}
	matrix := func(state workspace.State) {
		check(state, "UNKNOWN", "unknown scheme (known:", ExitUsage, "--secret", "UNKNOWN=nosuch:thing")
		check(state, "MISSING", "MISSING_VAR is not set", 1, "--secret", "MISSING=env:MISSING_VAR")
		check(state, "EMPTY", "empty", 1, "--secret", "EMPTY=env:EMPTY_VAR")
		check(state, "NOFILE", "no-such-file", 1, "--secret", "NOFILE=file:"+filepath.Join(dir, "no-such-file"))
		check(state, "NOKEY", "NOKEY", 1, "--secret", "NOKEY=dotenv:"+envFile+"#NOKEY")
		check(state, "", "no-such.env", 1, "--secrets-env-file", filepath.Join(dir, "no-such.env"))
		check(state, "VAULTED", ln.Addr().String(), 1, "--secret", "VAULTED=vault:secret/data/app#password")
		check(state, "TOOBIG", "1048560-byte limit", 1, "--secret", "TOOBIG=file:"+big)
		check(state, "TOOBIG", "1048560-byte limit", 1, "--secrets-audit", "--secret", "TOOBIG=file:"+big)
		if log, _ := os.ReadFile(filepath.Join(wsDir, "secrets-audit.log")); bytes.Contains(log, []byte(`"result":"ok"`)) {
			t.Fatalf("an ok record for a start that failed:\n%s", log)
		}
		// A name already declared changes nothing (a usage error).
		check(state, "LATER", "declared twice", ExitUsage, "--secret", "LATER=env:OTHER")
	}
	t.Setenv("LATER_VAR", "resolved-at-start")
	matrix(workspace.Created)

	// Now resolvable: the start succeeds with the stored declaration.
	code, _, errs := w.run(t, "", "start", "fc")
	if code != 0 || errs != fmt.Sprintf(plainWarning, "env")+"\n" {
		t.Fatalf("start fc: exit %d, stderr %q", code, errs)
	}
	if code, out, _ := w.run(t, "", "exec", "fc", "--", "cat", "/run/secrets/LATER"); code != 0 || out != "resolved-at-start" {
		t.Fatalf("exec cat: %d %q", code, out)
	}
	if out := w.want(t, 0, "", "status", "fc"); !strings.Contains(strings.Join(strings.Fields(out), " "), "secrets: LATER=env:LATER_VAR") {
		t.Fatalf("status: %s", out)
	}
	w.want(t, 0, "Halted fc", "halt", "fc")
	matrix(workspace.Halted)
	w.want(t, 0, "Deleted fc", "delete", "fc", "--yes")

	// A malformed declaration at create creates nothing.
	w.want(t, ExitUsage, "unknown scheme (known:", "create", "bad", "--image", specAlpine, "--secret", "X=nosuch:y")
	w.want(t, ExitUsage, "declared twice", "create", "bad", "--image", specAlpine, "--secret", "PRESENT=env:A", "--secrets-env-file", envFile)
	w.want(t, ExitUsage, "secret name must match", "create", "bad", "--image", specAlpine, "--secret", "1BAD=env:A")
	if _, err := os.Stat(filepath.Join(w.state, workspace.Dir, "bad")); err == nil {
		t.Fatal("a workspace was created from a malformed declaration")
	}
}

// leakValue returns a random value no file could hold by chance.
func leakValue(t *testing.T, tag string) string {
	b := make([]byte, 16)
	rand.Read(b)
	return "leak-" + tag + "-" + hex.EncodeToString(b)
}

// TestWorkspaceSecretsNoLeak delivers unique values by every route over a
// whole lifecycle and then searches every file of the state directory, and
// every CLI output except the workload's own, for them (raw and base64).
func TestWorkspaceSecretsNoLeak(t *testing.T) {
	w := secretsCLI(t)
	vEnv, vFile, vDemand := leakValue(t, "env"), leakValue(t, "dotenv"), leakValue(t, "ondemand")
	dir := t.TempDir()
	envFile := filepath.Join(dir, "app.env")
	demandFile := filepath.Join(dir, "demand.env")
	os.WriteFile(envFile, []byte("FROMFILE="+vFile+"\n"), 0o600)
	os.WriteFile(demandFile, []byte("DEMAND="+vDemand+"\n"), 0o600)
	t.Setenv("LEAK_TOKEN", vEnv)

	var outputs bytes.Buffer // every CLI output that is not the workload's
	cli := func(code int, args ...string) {
		t.Helper()
		c, out, errs := w.run(t, "", args...)
		outputs.WriteString(out + errs)
		if c != code {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, c, out, errs)
		}
	}
	workload := func(want string, args ...string) {
		t.Helper()
		c, out, errs := w.run(t, "", append([]string{"exec", "leaky", "--"}, args...)...)
		outputs.WriteString(errs)
		if c != 0 || out != want {
			t.Fatalf("exec %v: exit %d, stdout %q, stderr %q; want %q", args, c, out, errs, want)
		}
	}
	cli(0, "create", "leaky", "--image", specPython, "--profile", "tiny", "--disk-size", "300M",
		"--secret", "FROMENV=env:LEAK_TOKEN", "--secrets-env-file", envFile,
		"--secret-on-demand", "DEMAND=dotenv:"+demandFile+"#DEMAND", "--secrets-audit")
	reply := `{"ok":true,"value":"` + base64.StdEncoding.EncodeToString([]byte(vDemand)) + `"}` + "\n"
	for range 2 {
		cli(0, "start", "leaky")
		// QEMU does not inherit the environment variable an env:
		// reference names.
		pids := qemuPIDs(w.state)
		if len(pids) != 1 {
			t.Fatalf("QEMU processes: %v", pids)
		}
		for _, pid := range pids {
			if env, err := os.ReadFile("/proc/" + pid + "/environ"); err == nil && bytes.Contains(env, []byte(vEnv)) {
				t.Errorf("QEMU (pid %s) has the env: secret in its environment", pid)
			}
		}
		workload(vEnv+vFile, "cat", "/run/secrets/FROMENV", "/run/secrets/FROMFILE")
		workload(reply, "python3", "-c", fetchPy, "DEMAND")
		cli(0, "--json", "status", "leaky")
		cli(0, "logs", "leaky")
		cli(0, "halt", "leaky")
	}
	cli(0, "secret", "audit", "leaky")
	cli(0, "secret", "audit", "leaky", "--verify")
	cli(0, "list")

	var needles [][]byte
	for _, v := range []string{vEnv, vFile, vDemand} {
		needles = append(needles, []byte(v), []byte(base64.StdEncoding.EncodeToString([]byte(v))))
	}
	for i, n := range needles {
		if bytes.Contains(outputs.Bytes(), n) {
			t.Errorf("a CLI output holds secret %d: %s", i, outputs.String())
		}
	}
	if scanFile(t, envFile, needles) < 0 { // the scanner itself works
		t.Fatal("the scan misses a value in a file that holds it")
	}
	files, total := 0, int64(0)
	err := filepath.Walk(w.state, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		files++
		total += fi.Size()
		if hit := scanFile(t, p, needles); hit >= 0 {
			t.Errorf("%s holds secret needle %d", p, hit)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scanned %d files, %d MiB, and %d bytes of CLI output: no value found", files, total>>20, outputs.Len())
	if _, err := os.Stat(filepath.Join(w.state, workspace.Dir, "leaky", "logs", "console.log")); err != nil {
		t.Fatalf("the console log was not scanned: %v", err)
	}
	cli(0, "delete", "leaky", "--yes")
}

// scanFile returns the index of the first needle found in the file, or -1.
func scanFile(t *testing.T, path string, needles [][]byte) int {
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("scan %s: %v", path, err)
		return -1
	}
	defer f.Close()
	const chunk = 4 << 20
	overlap := 0
	for _, n := range needles {
		overlap = max(overlap, len(n))
	}
	buf := make([]byte, chunk+overlap)
	keep := 0
	for {
		n, err := io.ReadFull(f, buf[keep:])
		data := buf[:keep+n]
		for i, nd := range needles {
			if bytes.Contains(data, nd) {
				return i
			}
		}
		if err != nil {
			return -1
		}
		keep = copy(buf, data[len(data)-overlap:])
	}
}

// TestWorkspaceSecretsAudit: every access is recorded (denied fetches
// included), on-demand values rotate at once and materialized ones at the
// next start, and an audit log that cannot be written withholds the value.
func TestWorkspaceSecretsAudit(t *testing.T) {
	w := secretsCLI(t)
	dir := t.TempDir()
	envFile := filepath.Join(dir, "app.env")
	write := func(db, mat string) {
		if err := os.WriteFile(envFile, []byte("DB="+db+"\nMAT="+mat+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("db-one", "mat-one")
	ok := func(v string) string {
		return `{"ok":true,"value":"` + base64.StdEncoding.EncodeToString([]byte(v)) + `"}`
	}
	fetch := func(names ...string) []string {
		t.Helper()
		code, out, errs := w.run(t, "", append([]string{"exec", "aud", "--", "python3", "-c", fetchPy}, names...)...)
		if code != 0 {
			t.Fatalf("fetch %v: exit %d, %q %q", names, code, out, errs)
		}
		return strings.Split(strings.TrimSpace(out), "\n")
	}
	cat := func(want string) {
		t.Helper()
		if code, out, errs := w.run(t, "", "exec", "aud", "--", "cat", "/run/secrets/MAT"); code != 0 || out != want {
			t.Fatalf("cat MAT: %d %q %q; want %q", code, out, errs, want)
		}
	}
	w.want(t, 0, "Created", "create", "aud", "--image", specPython, "--profile", "tiny", "--disk-size", "300M",
		"--secret-on-demand", "DB=dotenv:"+envFile+"#DB", "--secret", "MAT=dotenv:"+envFile+"#MAT", "--secrets-audit")
	w.want(t, 0, "Started", "start", "aud")
	cat("mat-one")
	got := fetch("DB", "NOPE", "MAT")
	if len(got) != 3 || got[0] != ok("db-one") || !strings.HasPrefix(got[1], `{"ok":false`) || !strings.HasPrefix(got[2], `{"ok":false`) {
		t.Fatalf("fetches: %q", got)
	}
	t.Logf("denied fetch reply: %s", got[1])

	// Rotation: the on-demand value changes at once, the materialized one
	// at the next start.
	write("db-two", "mat-two")
	if got := fetch("DB"); got[0] != ok("db-two") {
		t.Fatalf("after rotation: %q", got)
	}
	cat("mat-one")
	w.want(t, 0, "Halted", "halt", "aud")
	w.want(t, 0, "Started", "start", "aud")
	cat("mat-two")

	out := w.want(t, 0, "", "secret", "audit", "aud")
	recs := regexp.MustCompile(`(?m)^\S+ (\S+ \S+ \S+)$`).FindAllStringSubmatch(out, -1)
	var lines []string
	for _, r := range recs {
		lines = append(lines, r[1])
	}
	want := []string{"MAT boot ok", "DB on-demand ok", "NOPE on-demand denied", "MAT on-demand denied", "DB on-demand ok", "MAT boot ok"}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit records:\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
	w.want(t, 0, "ok: 6 records, hash chain intact", "secret", "audit", "aud", "--verify")
	logPath := audit.PathFor(home.Home{Root: w.state}, "aud")
	if fi, err := os.Stat(logPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit log: %v %v", fi, err)
	}

	// An audit log that cannot be appended to (its last record was cut
	// short): the fetch fails and the value is withheld.
	dbTwo := base64.StdEncoding.EncodeToString([]byte("db-two"))
	orig, _ := os.ReadFile(logPath)
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"cut short`)
	f.Close()
	got = fetch("DB")
	if len(got) != 1 || !strings.HasPrefix(got[0], `{"ok":false`) || strings.Contains(got[0], dbTwo) {
		t.Fatalf("fetch with a damaged audit log: %q", got)
	}
	t.Logf("withheld: %s", got[0])
	if err := os.Truncate(logPath, int64(len(orig))); err != nil {
		t.Fatal(err)
	}

	// An audit log replaced by a directory: the same.
	if err := os.Rename(logPath, logPath+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(logPath, 0o700); err != nil {
		t.Fatal(err)
	}
	got = fetch("DB")
	if len(got) != 1 || !strings.HasPrefix(got[0], `{"ok":false`) || strings.Contains(got[0], dbTwo) {
		t.Fatalf("fetch with the audit log replaced: %q", got)
	}
	t.Logf("withheld: %s", got[0])
	if sl, _ := os.ReadFile(filepath.Join(w.state, workspace.Dir, "aud", "logs", "supervisor.log")); !bytes.Contains(sl, []byte("on-demand fetch of DB refused")) {
		t.Fatalf("the refusal is not in the supervisor log:\n%s", sl)
	}
	if moved, _ := os.ReadFile(logPath + ".moved"); bytes.Count(moved, []byte("\n")) != 6 {
		t.Fatalf("a record went to the replaced log:\n%s", moved)
	}
	w.want(t, 0, "Halted", "halt", "aud")

	// A log that cannot be opened refuses the start; a missing one too,
	// unless --secrets-audit asks for a new one.
	supLog := filepath.Join(w.state, workspace.Dir, "aud", "logs", "supervisor.log")
	before, _ := os.ReadFile(supLog)
	w.want(t, 1, "log cannot be opened", "start", "aud")
	after, _ := os.ReadFile(supLog)
	if bytes.Count(after, []byte("booting workspace")) != bytes.Count(before, []byte("booting workspace")) {
		t.Fatal("booted with an audit log that cannot be opened")
	}
	os.Remove(logPath)
	w.want(t, 1, "is missing", "start", "aud")
	w.want(t, 0, "halted", "status", "aud")
	w.want(t, 0, "Started", "start", "aud", "--secrets-audit")
	out = w.want(t, 0, "", "secret", "audit", "aud")
	if !regexp.MustCompile(`^\S+ MAT boot ok\n$`).MatchString(out) {
		t.Fatalf("new audit log: %q", out)
	}
	w.want(t, 0, "Halted", "halt", "aud")
	w.want(t, 0, "Deleted", "delete", "aud", "--yes")
}
