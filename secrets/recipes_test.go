package secrets

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/internal/testenv"
)

// readmeRecipe returns the helper script the README shows for name (the
// text between `cat > ~/bin/<name> <<'SH'` and `SH`), so the test runs
// exactly what users copy.
func readmeRecipe(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?s)cat > ~/bin/` + regexp.QuoteMeta(name) + ` <<'SH'\n(.*?)\nSH\n`)
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("README has no recipe for %s", name)
	}
	return string(m[1]) + "\n"
}

// The README's pass recipe against a real pass store and GnuPG key.
func TestHelperRecipePass(t *testing.T) {
	testenv.RequireTool(t, "pass")
	testenv.RequireTool(t, "gpg")
	dir := t.TempDir()
	gnupg := filepath.Join(dir, "gnupg")
	os.Mkdir(gnupg, 0o700)
	env := append(os.Environ(), "GNUPGHOME="+gnupg, "PASSWORD_STORE_DIR="+filepath.Join(dir, "store"), "HOME="+dir)
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("", "gpg", "--batch", "--passphrase", "", "--quick-gen-key", "microagent-test@example.invalid", "default", "default", "never")
	run("", "pass", "init", "microagent-test@example.invalid")
	const value = "pass-held-value-7f3a9c"
	run(value+"\n", "pass", "insert", "-m", "prod/db")

	script := filepath.Join(dir, "ma-pass")
	if err := os.WriteFile(script, []byte(readmeRecipe(t, "ma-pass")), 0o755); err != nil {
		t.Fatal(err)
	}
	// The helper inherits the environment, as it would from the CLI.
	t.Setenv("GNUPGHOME", gnupg)
	t.Setenv("PASSWORD_STORE_DIR", filepath.Join(dir, "store"))
	t.Setenv(HelperEnv, script)
	v, err := Resolve(context.Background(), Ref{Scheme: "helper", Ref: "prod/db"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Zero()
	if string(v.Bytes()) != value {
		t.Fatalf("pass recipe resolved %d bytes, not the stored value", v.Len())
	}
	_, err = Resolve(context.Background(), Ref{Scheme: "helper", Ref: "prod/missing"}, nil)
	if err == nil || strings.Contains(err.Error(), value) {
		t.Fatalf("missing entry: %v", err)
	}
}

// sopsBinary finds sops on PATH or in install-sops.sh's cache.
func sopsBinary(t *testing.T) string {
	t.Helper()
	if p := testenv.LookTool("sops"); p != "" {
		return p
	}
	for _, d := range testenv.ToolCacheDirs("sops") {
		p := filepath.Join(d, "bin", "sops")
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	testenv.SkipOrFail(t, "sops not found: run scripts/install-sops.sh")
	return ""
}

// The README's SOPS recipe against a real sops-encrypted YAML file and age key.
func TestHelperRecipeSOPS(t *testing.T) {
	sops := sopsBinary(t)
	testenv.RequireTool(t, "age-keygen")
	dir := t.TempDir()
	key := filepath.Join(dir, "age.key")
	out, err := exec.Command("age-keygen", "-o", key).CombinedOutput()
	if err != nil {
		t.Fatalf("age-keygen: %v %s", err, out)
	}
	m := regexp.MustCompile(`age1[0-9a-z]+`).FindString(string(out))
	if m == "" {
		b, _ := os.ReadFile(key)
		m = regexp.MustCompile(`age1[0-9a-z]+`).FindString(string(b))
	}
	const value = "sops-held-value-41d2"
	plain := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(plain, []byte("db_password: "+value+"\nother: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enc := filepath.Join(dir, "secrets.enc.yaml")
	cmd := exec.Command(sops, "-e", "--age", m, "--output", enc, plain)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sops -e: %v %s", err, out)
	}
	os.Remove(plain)
	if b, _ := os.ReadFile(enc); strings.Contains(string(b), value) {
		t.Fatal("the encrypted file holds the value in clear")
	}
	script := filepath.Join(dir, "ma-sops")
	if err := os.WriteFile(script, []byte(readmeRecipe(t, "ma-sops")), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Dir(sops)+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("SOPS_AGE_KEY_FILE", key)
	t.Setenv(HelperEnv, script)
	v, err := Resolve(context.Background(), Ref{Scheme: "helper", Ref: enc + "#db_password"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Zero()
	if string(v.Bytes()) != value {
		t.Fatalf("sops recipe resolved %d bytes, not the stored value", v.Len())
	}
	if _, err := Resolve(context.Background(), Ref{Scheme: "helper", Ref: enc + "#missing"}, nil); err == nil || strings.Contains(err.Error(), value) {
		t.Fatalf("missing key: %v", err)
	}
}
