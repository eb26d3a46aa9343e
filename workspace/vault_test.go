package workspace

import (
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/vaulttest"
)

// Vault through a booted workspace: a materialized secret takes a rotated
// value at the next start, an on-demand one at the next fetch, and a revoked
// token makes the next start fail closed without booting.
func TestVaultSecretsInWorkspace(t *testing.T) {
	v := vaulttest.Start(t)
	e := setup(t)
	ctx := testCtx(t)
	v.PutKV(t, "secret", "app", map[string]any{"password": "vault-v1-pw", "api": "vault-v1-api"})
	token := v.ReadToken(t, "secret/data/app")
	t.Setenv("VAULT_ADDR", v.Addr)
	t.Setenv("VAULT_TOKEN", token)
	// A real python3 in the guest talks to the secrets socket, as in the spec.
	pyRef := testenv.StartRegistry(t).PushImage(t, "python", testenv.PythonImage(t))
	if _, err := Create(ctx, e.h, CreateOptions{Name: "vlt", Image: pyRef, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20},
		Secrets:   decls(t, "PW=vault:secret/data/app#password", "?API=vault:secret/data/app#api")}); err != nil {
		t.Fatal(err)
	}
	read := func(want string) {
		t.Helper()
		code, out, errs := e.exec(t, "vlt", "", "python3", "-c", `import socket,os
print(open('/run/secrets/PW').read())
s=socket.socket(socket.AF_UNIX); s.connect(os.environ['MICROAGENT_SECRETS_SOCK']); s.sendall(b'GET API\n')
print(s.recv(4096).decode().strip())`)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("guest view: %d %q %q, want %q", code, out, errs, want)
		}
	}
	if _, err := Start(ctx, e.h, StartOptions{Name: "vlt", Executable: e.exe, Agent: e.agent}); err != nil {
		t.Fatal(err)
	}
	// dmF1bHQtdjEtYXBp is base64("vault-v1-api").
	read("vault-v1-pw\n{\"ok\":true,\"value\":\"dmF1bHQtdjEtYXBp\"}")
	// The guest never sees the backing credentials.
	if code, out, _ := e.exec(t, "vlt", "", "sh", "-c", "env; cat /proc/1/environ"); code != 0 || strings.Contains(out, token) || strings.Contains(out, "VAULT_") {
		t.Fatalf("the guest sees Vault credentials (exit %d)", code)
	}

	// Rotate: on demand sees it at once, the materialized file at the next start.
	v.PutKV(t, "secret", "app", map[string]any{"password": "vault-v2-pw", "api": "vault-v2-api"})
	read("vault-v1-pw\n{\"ok\":true,\"value\":\"dmF1bHQtdjItYXBp\"}")
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "vlt"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, e.h, StartOptions{Name: "vlt", Executable: e.exe, Agent: e.agent}); err != nil {
		t.Fatal(err)
	}
	read("vault-v2-pw\n")
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "vlt"}); err != nil {
		t.Fatal(err)
	}

	// Revoked: the next start fails closed, naming the secret, with no VM.
	v.RevokeToken(t, token)
	_, err := Start(ctx, e.h, StartOptions{Name: "vlt", Executable: e.exe, Agent: e.agent})
	if err == nil || !strings.Contains(err.Error(), "PW") || !strings.Contains(err.Error(), "denied") {
		t.Fatalf("start with a revoked token: %v", err)
	}
	e.assertNoProcs(t)
	e.assertAtRest(t, "vlt", Halted)
}
