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
