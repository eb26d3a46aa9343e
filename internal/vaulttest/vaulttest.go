// Package vaulttest starts a real HashiCorp Vault server in dev mode on
// 127.0.0.1 for tests, with helpers to write KV version 2 secrets, make
// limited tokens, revoke tokens, seal and stop the server.
//
// The server binary is built by scripts/install-vault.sh into a cache
// outside the repository (see Binary). Without it, tests that call Start
// are skipped, except under CI=true, where they fail.
package vaulttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/microagent-dev/microagent/internal/testenv"
)

// Version is the Vault release scripts/install-vault.sh builds.
const Version = "1.19.4"

// BinEnv names a variable that, when set, is the Vault binary to use.
const BinEnv = "MICROAGENT_VAULT_BIN"

// readyTimeout bounds the wait for a fresh dev server to become active;
// dev mode is healthy in ~0.5 s, more on a loaded 2-core machine.
const readyTimeout = 30 * time.Second

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Binary returns the Vault server binary: $MICROAGENT_VAULT_BIN, else
// vault-<Version> in install-vault.sh's cache, else "vault" on PATH; ""
// when there is none.
func Binary() string {
	if p := os.Getenv(BinEnv); p != "" {
		if executable(p) {
			return p
		}
		return ""
	}
	for _, d := range testenv.ToolCacheDirs("vault") {
		if p := filepath.Join(d, "vault-"+Version); executable(p) {
			return p
		}
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p
	}
	return ""
}

// Server is a running Vault dev server private to one test.
type Server struct {
	// Addr is "http://127.0.0.1:PORT", the value for VAULT_ADDR.
	Addr string
	// RootToken is the dev server's root token.
	RootToken string

	proc *testenv.Process
}

// Start starts a Vault dev server (in-memory storage, KV v2 mounted at
// "secret/") on a free loopback port, waits until it is active and stops
// it when the test ends. Without a Vault binary the test is skipped (under
// CI=true it fails) with the command that builds one.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		msg := "vault server binary not found: build it with scripts/install-vault.sh (~11 min, once) or set " + BinEnv
		testenv.SkipOrFail(t, "%s", msg)
	}
	return testenv.StartRetried(t, "vault dev server", func() (*Server, error) { return start(t, bin) })
}

func start(t testing.TB, bin string) (*Server, error) {
	port, err := testenv.FreePort()
	if err != nil {
		return nil, err
	}
	tok := make([]byte, 12)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	s := &Server{
		Addr:      fmt.Sprintf("http://127.0.0.1:%d", port),
		RootToken: "root-" + hex.EncodeToString(tok),
	}
	home := t.TempDir()
	cmd := exec.Command(bin, "server", "-dev",
		"-dev-root-token-id="+s.RootToken,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port),
		"-log-level=warn")
	// Dev mode writes ~/.vault-token: a private HOME keeps it out of the
	// user's. No VAULT_* variable of the test's environment leaks in.
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "TMPDIR=" + home}
	cmd.Dir = home
	p, err := testenv.StartProcess(cmd)
	if err != nil {
		return nil, err
	}
	s.proc = p
	switch err := testenv.WaitHTTP(s.Addr+"/v1/sys/health", 2*time.Second, readyTimeout, p.Exited()); {
	case err == nil:
		return s, nil
	case errors.Is(err, testenv.ErrExited):
		return nil, fmt.Errorf("vault on %s exited early: %s", s.Addr, tail(p.Output()))
	default:
		p.Stop()
		return nil, fmt.Errorf("vault on %s not active within %v (%v): %s", s.Addr, readyTimeout, err, tail(p.Output()))
	}
}

// Stop kills the server and waits for it to exit. Stopping twice is fine;
// requests to Addr then fail with "connection refused".
func (s *Server) Stop() { s.proc.Stop() }

// Env returns a lookup function (like os.LookupEnv) that sees only
// VAULT_ADDR=Addr and VAULT_TOKEN=token.
func (s *Server) Env(token string) func(string) (string, bool) {
	m := map[string]string{"VAULT_ADDR": s.Addr, "VAULT_TOKEN": token}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// Client returns an API client for the server authenticated with token
// ("" means the root token).
func (s *Server) Client(t testing.TB, token string) *vault.Client {
	t.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatalf("vault client: %v", err)
	}
	if token == "" {
		token = s.RootToken
	}
	c.SetToken(token)
	c.ClearNamespace()
	return c
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// PutKV writes data as a new version of the KV v2 secret at mount/path
// (mount "secret" is the dev server's) and returns the version number.
// Failure messages name the path, never the data.
func (s *Server) PutKV(t testing.TB, mount, path string, data map[string]any) int {
	t.Helper()
	sec, err := s.Client(t, "").KVv2(mount).Put(ctx(t), path, data)
	if err != nil {
		t.Fatalf("vault: write %s/data/%s: %v", mount, path, err)
	}
	return sec.VersionMetadata.Version
}

// DeleteKV soft-deletes the latest version of the KV v2 secret.
func (s *Server) DeleteKV(t testing.TB, mount, path string) {
	t.Helper()
	if err := s.Client(t, "").KVv2(mount).Delete(ctx(t), path); err != nil {
		t.Fatalf("vault: delete %s/data/%s: %v", mount, path, err)
	}
}

// ReadToken creates a policy that may only read the given KV v2 API paths
// (e.g. "secret/data/app") and returns a new token holding just that policy.
func (s *Server) ReadToken(t testing.TB, paths ...string) string {
	t.Helper()
	var hcl strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&hcl, "path %q {\n  capabilities = [\"read\"]\n}\n", p)
	}
	return s.Token(t, hcl.String())
}

// Token creates a policy from the given HCL and returns a new token (TTL
// one hour, no default policy) holding just that policy.
func (s *Server) Token(t testing.TB, policyHCL string) string {
	t.Helper()
	c := s.Client(t, "")
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "test-" + hex.EncodeToString(b)
	if err := c.Sys().PutPolicyWithContext(ctx(t), name, policyHCL); err != nil {
		t.Fatalf("vault: put policy %s: %v", name, err)
	}
	sec, err := c.Auth().Token().CreateWithContext(ctx(t), &vault.TokenCreateRequest{
		Policies:        []string{name},
		NoDefaultPolicy: true,
		TTL:             "1h",
	})
	if err != nil {
		t.Fatalf("vault: create token with policy %s: %v", name, err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		t.Fatalf("vault: create token with policy %s: no token in the answer", name)
	}
	return sec.Auth.ClientToken
}

// RevokeToken revokes token (and its children).
func (s *Server) RevokeToken(t testing.TB, token string) {
	t.Helper()
	if err := s.Client(t, "").Auth().Token().RevokeTreeWithContext(ctx(t), token); err != nil {
		t.Fatalf("vault: revoke token: %v", err)
	}
}

// Seal seals the server: every later read fails with HTTP 503 until
// Unseal.
func (s *Server) Seal(t testing.TB) {
	t.Helper()
	if err := s.Client(t, "").Sys().SealWithContext(ctx(t)); err != nil {
		t.Fatalf("vault: seal: %v", err)
	}
}

// Unseal unseals the server with the unseal key dev mode printed at start.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	var key string
	for _, line := range strings.Split(s.proc.Output(), "\n") {
		if k, ok := strings.CutPrefix(strings.TrimSpace(line), "Unseal Key: "); ok {
			key = strings.TrimSpace(k)
		}
	}
	if key == "" {
		t.Fatal("vault: no unseal key in the dev server's output")
	}
	st, err := s.Client(t, "").Sys().UnsealWithContext(ctx(t), key)
	if err != nil {
		t.Fatalf("vault: unseal: %v", err)
	}
	if st.Sealed {
		t.Fatal("vault: still sealed after unseal")
	}
	// Unsealed is not yet active: wait until the server answers as active.
	if err := testenv.WaitHTTP(s.Addr+"/v1/sys/health", 2*time.Second, readyTimeout, nil); err != nil {
		t.Fatalf("vault: not active within %v after unseal", readyTimeout)
	}
}

// Output returns what the server printed (for a failing test's message).
func (s *Server) Output() string { return s.proc.Output() }

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}
