package secrets

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func envOf(m map[string]string) LookupEnv {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func resolveRef(t *testing.T, ref string, env LookupEnv) (*Value, error) {
	t.Helper()
	r, err := ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	return Resolve(context.Background(), r, env)
}

func TestEnvScheme(t *testing.T) {
	secret := "tk-demo-0123456789abcdef0123456789abcdef"
	env := envOf(map[string]string{"API_TOKEN": secret, "EMPTY": ""})
	v, err := resolveRef(t, "env:API_TOKEN", env)
	if err != nil {
		t.Fatal(err)
	}
	if v.Len() != 40 {
		t.Fatalf("len %d", v.Len())
	}
	mustEqualValue(t, v, []byte(secret))
	assertNoLeak(t, []byte(secret), v)
	v.Zero()

	_, err = resolveRef(t, "env:MISSING", env)
	if !errors.Is(err, ErrNotFound) || err.Error() != "environment variable MISSING is not set: export it in the shell that runs microagent" {
		t.Fatalf("missing: %v", err)
	}
	if _, err := resolveRef(t, "env:EMPTY", env); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	if !IsPlaintext("env") || !IsPlaintext("file") || !IsPlaintext("dotenv") || IsPlaintext("vault") || IsPlaintext("helper") {
		t.Fatal("plaintext flags")
	}
	if got := PlaintextWarning("env"); got != `warning: secret scheme "env" is plaintext: not encrypted at rest, not for production` {
		t.Fatal(got)
	}
	// nil env means the process's environment.
	t.Setenv("MICROAGENT_TEST_SECRET", secret)
	v, err = Resolve(context.Background(), Ref{"env", "MICROAGENT_TEST_SECRET"}, nil)
	if err != nil || v.Len() != 40 {
		t.Fatalf("process env: %v", err)
	}
}

func TestFileScheme(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("\x00\xffbinary-s3cret\r\n\n") // binary, trailing newlines kept
	p := filepath.Join(dir, "key.bin")
	if err := os.WriteFile(p, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := resolveRef(t, "file:"+p, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualValue(t, v, secret)
	assertNoLeak(t, secret[2:16], v)

	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, MaxValueSize+1), 0o600)
	// A full MiB is what the channel cannot carry sealed (issue #11): it
	// fails here, at resolution, not at delivery after the VM booted.
	mib := filepath.Join(dir, "mib")
	os.WriteFile(mib, bytes.Repeat([]byte{'m'}, 1<<20), 0o600)
	most := filepath.Join(dir, "most")
	os.WriteFile(most, bytes.Repeat([]byte{'m'}, MaxValueSize), 0o600)
	if v, err := resolveRef(t, "file:"+most, nil); err != nil || v.Len() != MaxValueSize {
		t.Fatalf("a value of exactly MaxValueSize: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for ref, kind := range map[string]error{
		"file:" + filepath.Join(dir, "missing"):     ErrNotFound,
		"file:" + filepath.Join(dir, "key.bin/sub"): ErrNotFound,
		"file:" + empty: ErrEmpty,
		"file:" + dir:   ErrInvalid,
		"file:" + big:   ErrTooLarge,
		"file:" + mib:   ErrTooLarge,
		"file:" + fifo:  ErrInvalid, // would block: refused
	} {
		_, err := resolveRef(t, ref, nil)
		if !errors.Is(err, kind) {
			t.Errorf("%s: %v, want %v", ref, err, kind)
		}
	}
}

// TestFileSchemeDenied reads a file the user may not read. As root (which
// ignores file modes) the check runs in a child process as nobody.
func TestFileSchemeDenied(t *testing.T) {
	if os.Getenv("MICROAGENT_TEST_DENIED_CHILD") == "1" {
		_, err := Resolve(context.Background(), Ref{"file", os.Getenv("MICROAGENT_TEST_DENIED_PATH")}, nil)
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("unreadable file: %v", err)
		}
		return
	}
	base, err := os.MkdirTemp("", "secrets-denied-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	p := filepath.Join(base, "secret")
	if err := os.WriteFile(p, []byte("unreadable-s3cret"), 0o000); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		_, err := Resolve(context.Background(), Ref{"file", p}, nil)
		if !errors.Is(err, ErrDenied) {
			t.Fatalf("unreadable file: %v", err)
		}
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "test.bin")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestFileSchemeDenied$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MICROAGENT_TEST_DENIED_CHILD=1", "MICROAGENT_TEST_DENIED_PATH="+p, "GOCOVERDIR="+base)
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
}

func TestDotenvScheme(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "app.env")
	content := "# comment\n\nexport DB_PASSWORD='hunter2-but-longer'  # trailing\nAPP_ENV=dev\nQUOTED=\"line1\\nline2\"\r\nEMPTY=\n"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := resolveRef(t, "dotenv:"+p+"#DB_PASSWORD", nil)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualValue(t, v, []byte("hunter2-but-longer"))
	v, err = resolveRef(t, "dotenv:"+p+"#QUOTED", nil)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualValue(t, v, []byte("line1\nline2"))

	_, err = resolveRef(t, "dotenv:"+p+"#NOPE", nil)
	if !errors.Is(err, ErrNotFound) || err.Error() != "key NOPE not found in "+p {
		t.Fatalf("missing key: %v", err)
	}
	_, err = resolveRef(t, "dotenv:"+p+"#EMPTY", nil)
	if !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := resolveRef(t, "dotenv:"+filepath.Join(dir, "none.env")+"#K", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.env")
	os.WriteFile(bad, []byte("OK=1\nTOKEN=\"unterminated-s3cret-value\n"), 0o600)
	_, err = resolveRef(t, "dotenv:"+bad+"#OK", nil)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "line 2: value of TOKEN: unterminated double quote") {
		t.Fatalf("malformed file: %v", err)
	}
	assertNoLeak(t, []byte("unterminated-s3cret-value"), err)
	assertNoLeak(t, []byte("hunter2-but-longer"), v)
}

// memResolver is a custom scheme registered the way a library user would.
type memResolver struct {
	mu       sync.Mutex
	values   map[string]string
	returned []*Value
}

func (m *memResolver) Plaintext() bool { return false }

func (m *memResolver) Resolve(_ context.Context, ref string, _ LookupEnv) (*Value, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.values[ref]
	if !ok {
		return nil, Errorf(ErrDenied, "mem %s: denied", ref)
	}
	v := NewValue([]byte(s))
	m.returned = append(m.returned, v)
	return v, nil
}

var testMem = &memResolver{values: map[string]string{"a": "value-of-a-123", "b": "value-of-b-456", "empty": ""}}

func init() {
	if err := Register("test+mem", testMem); err != nil {
		panic(err)
	}
}

func TestResolveAllFailsClosed(t *testing.T) {
	secretA := []byte("value-of-a-123")
	var d Declarations
	for _, s := range []string{"A=test+mem:a", "B=env:B_VAR", "C=test+mem:denied"} {
		decl, err := ParseDecl(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Add(decl); err != nil {
			t.Fatal(err)
		}
	}
	testMem.returned = nil
	b, warns, err := ResolveAll(context.Background(), d, envOf(map[string]string{"B_VAR": "value-of-b-var"}))
	if b != nil || !errors.Is(err, ErrDenied) || err.Error() != "secret C: mem denied: denied" || !IsDenied(err) {
		t.Fatalf("ResolveAll: %v, %v", b, err)
	}
	var se *Error
	if !errors.As(err, &se) || se.Name != "C" || se.Scheme != "test+mem" || Reason(err) != "mem denied: denied" {
		t.Fatalf("error fields %+v", se)
	}
	if len(testMem.returned) != 1 || testMem.returned[0].Len() != 0 {
		t.Fatal("the value resolved before the failure was not zeroed")
	}
	if len(warns) != 1 || warns[0].Scheme != "env" || warns[0].Names[0] != "B" {
		t.Fatalf("warnings %+v", warns)
	}
	assertNoLeak(t, secretA, err)

	// Without the failing one, every value arrives in order.
	d.Secrets = d.Secrets[:2]
	b, warns, err = ResolveAll(context.Background(), d, envOf(map[string]string{"B_VAR": "value-of-b-var"}))
	if err != nil || len(b.Secrets) != 2 || b.Secrets[0].Name != "A" || b.Secrets[1].Scheme != "env" || len(warns) != 1 {
		t.Fatalf("ResolveAll: %v %v", b, err)
	}
	v, _ := b.Get("A")
	mustEqualValue(t, v, secretA)
	assertNoLeak(t, secretA, b, *b, warns)
	b.Zero()

	// On-demand declarations are checked, not resolved.
	testMem.returned = nil
	d.Secrets = append(d.Secrets, Decl{Name: "LAZY", Ref: Ref{"test+mem", "b"}, OnDemand: true})
	b, _, err = ResolveAll(context.Background(), d, envOf(map[string]string{"B_VAR": "x"}))
	if err != nil || len(b.Secrets) != 2 || len(testMem.returned) != 1 {
		t.Fatalf("on-demand resolved at boot: %v, %d resolutions", err, len(testMem.returned))
	}
	v, err = ResolveOnDemand(context.Background(), d, "LAZY", nil)
	if err != nil {
		t.Fatal(err)
	}
	mustEqualValue(t, v, []byte("value-of-b-456"))
	if _, err := ResolveOnDemand(context.Background(), d, "A", nil); !errors.Is(err, ErrNotDeclared) {
		t.Fatalf("boot secret fetched on demand: %v", err)
	}
	// An empty value from any scheme fails closed.
	if _, err := Resolve(context.Background(), Ref{"test+mem", "empty"}, nil); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	// Unknown scheme.
	if _, err := Resolve(context.Background(), Ref{"nosuch", "x"}, nil); !errors.Is(err, ErrUnknownScheme) {
		t.Fatalf("unknown: %v", err)
	}
	// A canceled context resolves nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Resolve(ctx, Ref{"test+mem", "a"}, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("canceled: %v", err)
	}
}

// writeHelper writes an executable shell script.
func writeHelper(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "helper")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHelperScheme(t *testing.T) {
	helper := writeHelper(t, `case "$1" in
ok) printf 'helper-s3cret-value\n' ;;
twonl) printf 'two-newlines-s3cret\n\n' ;;
nonl) printf 'no-newline-s3cret' ;;
fail) printf 'leaked-stdout-s3cret'; echo "no such item: $1" >&2; exit 3 ;;
empty) printf '\n' ;;
big) head -c 2000000 /dev/zero ;;
*) echo "unexpected $# args" >&2; exit 9 ;;
esac
`)
	env := envOf(map[string]string{HelperEnv: helper})
	for ref, want := range map[string]string{"ok": "helper-s3cret-value", "twonl": "two-newlines-s3cret\n", "nonl": "no-newline-s3cret"} {
		v, err := resolveRef(t, "helper:"+ref, env)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		mustEqualValue(t, v, []byte(want))
		assertNoLeak(t, []byte(want[:10]), v)
	}
	_, err := resolveRef(t, "helper:fail", env)
	if !errors.Is(err, ErrHelper) || err.Error() != "helper "+helper+" fail failed (exit status 3): stderr: no such item: fail" {
		t.Fatalf("failing helper: %v", err)
	}
	assertNoLeak(t, []byte("leaked-stdout-s3cret"), err)
	if _, err := resolveRef(t, "helper:empty", env); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := resolveRef(t, "helper:big", env); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big: %v", err)
	}
	if _, err := resolveRef(t, "helper:ok", envOf(nil)); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), HelperEnv+" is not set") {
		t.Fatalf("unset: %v", err)
	}
	if _, err := resolveRef(t, "helper:ok", envOf(map[string]string{HelperEnv: "/nonexistent/helper"})); !errors.Is(err, ErrConfig) {
		t.Fatalf("missing program: %v", err)
	}
	if _, err := resolveRef(t, "helper:-x", env); !errors.Is(err, ErrBadRef) {
		t.Fatalf("option-like ref: %v", err)
	}
}

func TestHelperTimeoutKillsGroup(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "child-survived")
	// The helper's child would write the marker after the timeout if the
	// process group were not killed.
	helper := writeHelper(t, "(sleep 1; touch "+marker+") &\nsleep 30\n")
	h := &HelperResolver{Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := h.Resolve(context.Background(), "slow", envOf(map[string]string{HelperEnv: helper}))
	took := time.Since(start)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Fatalf("slow helper: %v", err)
	}
	if took > 3*time.Second {
		t.Fatalf("timeout took %v", took)
	}
	// Watch past the child's 1 s: it must be gone, so no marker appears.
	deadline := start.Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("the helper's child outlived the timeout")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestErrorf(t *testing.T) {
	cause := os.ErrNotExist
	err := Errorf(ErrNotFound, "thing %s: %w", "x", cause)
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, os.ErrNotExist) || err.Error() != "thing x: file does not exist" {
		t.Fatalf("%v", err)
	}
	if Kind(err) != ErrNotFound || Kind(errors.New("x")) != nil {
		t.Fatal("Kind")
	}
	if !bytes.Equal([]byte(Reason(&Error{Name: "A", Err: err})), []byte("thing x: file does not exist")) {
		t.Fatal("Reason")
	}
}
