package mcpserver

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/workspace"
)

// nodeDeps installs the TypeScript SDK pinned by testdata/node's lockfile
// into a cache folder (once per lockfile) and returns that folder, holding
// client.mjs and its node_modules.
func nodeDeps(t *testing.T) string {
	t.Helper()
	testenv.RequireTool(t, "node")
	npm := testenv.RequireTool(t, "npm")
	dir := filepath.Join(testenv.CacheDir(), "mcp-node-client")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.ReadFile("testdata/node/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"package.json", "package-lock.json", "client.mjs"} {
		b, err := os.ReadFile(filepath.Join("testdata/node", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stamp := filepath.Join(dir, "node_modules", ".installed-lock")
	if old, err := os.ReadFile(stamp); err == nil && bytes.Equal(old, lock) {
		return dir
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, "npm ci of the MCP TypeScript SDK: %v\n%s", err, out)
	}
	if err := os.WriteFile(stamp, lock, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// buildCLI builds cmd/microagent for the client to start.
func buildCLI(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "microagent")
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/microagent")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build microagent: %v\n%s", err, b)
	}
	return out
}

// The server driven by a client nobody here wrote: the official MCP
// TypeScript SDK, over stdio (the client starts "microagent serve mcp")
// and then over --http against a second server of the same owner. See
// testdata/node/client.mjs for the checks.
func TestNodeClient(t *testing.T) {
	dir := nodeDeps(t)
	e := vmSetup(t)
	bin := buildCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := workspace.Create(ctx, e.h, workspace.CreateOptions{Name: "other", Image: e.ref, Agent: e.agent, Profile: "tiny", Resources: workspace.Resources{DiskBytes: 64 << 20}}); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte("images: [\"127.0.0.1:*/*\"]\nmax_workspaces: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The CLI's supervisors and their network helper come from the
	// environment as under make test ($MICROAGENT_AGENT's folder).
	env := append(os.Environ(), "MICROAGENT_AGENT="+e.agent)
	node := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "node", append([]string{"client.mjs"}, args...)...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		t.Logf("node %s:\n%s", args[0], out)
		if err != nil || !bytes.Contains(out, []byte("\nPASS\n")) {
			t.Fatalf("node client over %s: %v", args[0], err)
		}
	}
	node("stdio", bin, e.h.Root, policy, e.ref)

	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := exec.CommandContext(ctx, bin, "--state-dir", e.h.Root, "serve", "mcp", "--http", "127.0.0.1:0", "--token-file", tok, "--policy", policy)
	srv.Env = env
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Signal(os.Interrupt)
		srv.Wait()
	}()
	urlRe := regexp.MustCompile(`serving MCP at (http://\S+)`)
	sc := bufio.NewScanner(stderr)
	url := ""
	for url == "" && sc.Scan() {
		if m := urlRe.FindStringSubmatch(sc.Text()); m != nil {
			url = m[1]
		}
	}
	if url == "" {
		t.Fatalf("serve mcp --http printed no address: %v", sc.Err())
	}
	// The rest of its stderr (failures it logs) goes to the test's.
	go io.Copy(os.Stderr, stderr)
	node("http", url, "0123456789abcdef0123456789abcdef")
}
