package workspace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/wsdir"
)

func decls(t *testing.T, specs ...string) secrets.Declarations {
	t.Helper()
	var d secrets.Declarations
	for _, s := range specs {
		onDemand := strings.HasPrefix(s, "?")
		decl, err := secrets.ParseDecl(strings.TrimPrefix(s, "?"))
		if err != nil {
			t.Fatal(err)
		}
		decl.OnDemand = onDemand
		if err := d.Add(decl); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestSecretsManifestRoundTrip(t *testing.T) {
	m := &Manifest{Name: "ws"}
	if c, err := m.Secrets(); err != nil || !c.Empty() {
		t.Fatalf("no declarations: %+v %v", c, err)
	}
	want := SecretsConfig{Declarations: decls(t, "A=env:X", "?B=dotenv:/f.env#B"), Audit: true}
	want.EnvFiles = []string{"/app.env"}
	if err := m.SetSecrets(want); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	if !strings.Contains(string(b), `"secrets":{"secrets":[{"name":"A","ref":"env:X"},{"name":"B","ref":"dotenv:/f.env#B","onDemand":true}],"envFiles":["/app.env"],"audit":true}`) {
		t.Fatalf("manifest: %s", b)
	}
	var back Manifest
	json.Unmarshal(b, &back)
	got, err := back.Secrets()
	if err != nil || len(got.Secrets) != 2 || !got.Secrets[1].OnDemand || got.EnvFiles[0] != "/app.env" || !got.Audit {
		t.Fatalf("read back: %+v %v", got, err)
	}
	if err := m.SetSecrets(SecretsConfig{}); err != nil || m.Declarations["secrets"] != nil {
		t.Fatalf("empty config kept: %v", m.Declarations)
	}
	m.Declarations = map[string]json.RawMessage{"secrets": json.RawMessage(`{"secrets":[{"name":"A","ref":"nosuch:x"}]}`)}
	if _, err := m.Secrets(); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("unknown scheme in the manifest: %v", err)
	}
}

func TestMergeDecls(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "a.env")
	os.WriteFile(envFile, []byte("FROMFILE=1\nA=2\n"), 0o600)
	base := decls(t, "A=env:X")
	base.EnvFiles = nil
	d, err := mergeDecls(base, decls(t, "B=env:Y"))
	if err != nil || len(d.Secrets) != 2 || len(base.Secrets) != 1 {
		t.Fatalf("merge: %+v %v (base %+v)", d, err, base)
	}
	for _, add := range []secrets.Declarations{
		decls(t, "A=env:Z"),
		{EnvFiles: []string{envFile}}, // its key A clashes
	} {
		if _, err := mergeDecls(base, add); !errors.Is(err, secrets.ErrDuplicate) {
			t.Errorf("merge %+v: %v", add, err)
		}
	}
	withFile := secrets.Declarations{EnvFiles: []string{envFile}}
	if _, err := mergeDecls(withFile, withFile); !errors.Is(err, secrets.ErrDuplicate) {
		t.Errorf("env file twice: %v", err)
	}
	// An env file that cannot be read now is a start-time matter.
	if _, err := mergeDecls(base, secrets.Declarations{EnvFiles: []string{"/no/such.env"}}); err != nil {
		t.Errorf("unreadable env file refused at declaration: %v", err)
	}
}

// TestSecretsDeclarationRefusals: bad declarations fail Create and Start
// with ErrSecretDecl before anything is pulled, written or changed.
func TestSecretsDeclarationRefusals(t *testing.T) {
	ctx := context.Background()
	h := home.Home{Root: t.TempDir()}
	bad := secrets.Declarations{Secrets: []secrets.Decl{{Name: "A", Ref: secrets.Ref{Scheme: "nosuch", Ref: "x"}}}}
	envFile := filepath.Join(t.TempDir(), "bad.env")
	os.WriteFile(envFile, []byte("1BAD=x\n"), 0o600)
	for _, d := range []secrets.Declarations{bad, {EnvFiles: []string{envFile}}} {
		if _, err := Create(ctx, h, CreateOptions{Name: "ws", Image: "x", Secrets: d}); !errors.Is(err, ErrSecretDecl) {
			t.Errorf("create with %+v: %v", d, err)
		}
	}
	if ents, _ := os.ReadDir(h.Root); len(ents) != 0 {
		t.Fatalf("a refused create wrote %v", ents)
	}

	// A workspace at rest, made by hand, declaring A with auditing on.
	w := newWS(h, "ws")
	os.MkdirAll(w.Path(wsdir.LogsDir), wsdir.DirPerm)
	m := &Manifest{Version: ManifestVersion, Name: "ws"}
	m.SetSecrets(SecretsConfig{Declarations: decls(t, "A=env:X"), Audit: true})
	if err := wsdir.WriteManifest(w.ManifestPath(), m); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(w.ManifestPath())
	_, err := Start(ctx, h, StartOptions{Name: "ws", Secrets: decls(t, "A=env:Y")})
	if !errors.Is(err, ErrSecretDecl) || !strings.Contains(err.Error(), "secret A: declared twice") {
		t.Fatalf("start redeclaring A: %v", err)
	}
	// The audit log is missing: refused unless --secrets-audit.
	_, err = Start(ctx, h, StartOptions{Name: "ws"})
	if err == nil || !strings.Contains(err.Error(), "audit log") || !strings.Contains(err.Error(), "--secrets-audit") {
		t.Fatalf("start without its audit log: %v", err)
	}
	if after, _ := os.ReadFile(w.ManifestPath()); !bytes.Equal(before, after) {
		t.Fatalf("manifest changed:\n%s", after)
	}
	if _, err := os.Stat(w.Path(wsdir.RecordFile)); err == nil {
		t.Fatal("a refused start wrote the state")
	}
}

// TestSecretsLifecycle boots a workspace with secrets through the library:
// a reference that cannot be resolved leaves it as it was (and is
// audited), one declared at start is kept once the start succeeds, and
// the plaintext warning reaches StartOptions.Warnings.
func TestSecretsLifecycle(t *testing.T) {
	e := setup(t)
	ctx := testCtx(t)
	if _, err := Create(ctx, e.h, CreateOptions{Name: "sec", Image: e.ref, Agent: e.agent, Profile: "tiny",
		Resources: Resources{DiskBytes: 256 << 20}, Secrets: decls(t, "S=env:WS_TEST_S"), SecretsAudit: true}); err != nil {
		t.Fatal(err)
	}
	logPath := audit.PathFor(e.h, "sec")
	if fi, err := os.Stat(logPath); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit log at create: %v %v", fi, err)
	}
	_, err := Start(ctx, e.h, StartOptions{Name: "sec", Executable: e.exe, Agent: e.agent})
	if err == nil || !strings.Contains(err.Error(), "secret S") || !strings.Contains(err.Error(), "WS_TEST_S is not set") {
		t.Fatalf("start without WS_TEST_S: %v", err)
	}
	// The kind crossed from the supervisor process (package errcode).
	if !errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("start without WS_TEST_S: %v does not match secrets.ErrNotFound", err)
	}
	e.assertAtRest(t, "sec", Created)
	if inf := e.status(t, "sec"); inf.Reason != "" || inf.Secrets == nil || len(inf.Secrets.Secrets) != 1 {
		t.Fatalf("after the failed start: %+v", inf)
	}

	t.Setenv("WS_TEST_S", "value-s")
	t.Setenv("WS_TEST_T", "value-t")
	var warn bytes.Buffer
	inf, err := Start(ctx, e.h, StartOptions{Name: "sec", Executable: e.exe, Agent: e.agent,
		Secrets: decls(t, "T=env:WS_TEST_T"), Warnings: &warn})
	if err != nil || inf.State != Running {
		t.Fatalf("start: %v %+v", err, inf)
	}
	if want := secrets.PlaintextWarning("env") + "\n"; warn.String() != want {
		t.Fatalf("warnings %q, want %q", warn.String(), want)
	}
	if code, out, _ := e.exec(t, "sec", "", "sh", "-c", "cat /run/secrets/S /run/secrets/T; stat -c %a /run/secrets/S"); code != 0 || out != "value-svalue-t400\n" {
		t.Fatalf("guest view: %d %q", code, out)
	}
	if inf := e.status(t, "sec"); len(inf.Secrets.Secrets) != 2 || inf.Secrets.Secrets[1].Name != "T" {
		t.Fatalf("T not kept: %+v", inf.Secrets)
	}
	if _, err := Halt(ctx, e.h, HaltOptions{Name: "sec"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, e.h, StartOptions{Name: "sec", Executable: e.exe, Secrets: decls(t, "T=env:WS_TEST_T")}); !errors.Is(err, ErrSecretDecl) {
		t.Fatalf("redeclaring T: %v", err)
	}
	recs, err := audit.Read(logPath)
	var got []string
	for _, r := range recs {
		got = append(got, r.Name+" "+string(r.Access)+" "+string(r.Result))
	}
	if want := "S boot error,S boot ok,T boot ok"; err != nil || strings.Join(got, ",") != want {
		t.Fatalf("audit: %q %v; want %s", got, err, want)
	}
	e.assertAtRest(t, "sec", Halted)
	if err := Delete(ctx, e.h, DeleteOptions{Name: "sec"}); err != nil {
		t.Fatal(err)
	}
}
