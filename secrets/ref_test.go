package secrets

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	good := map[string]Ref{
		"env:API_TOKEN":                     {"env", "API_TOKEN"},
		"file:/run/x:y":                     {"file", "/run/x:y"},
		"dotenv:/tmp/a.env#KEY":             {"dotenv", "/tmp/a.env#KEY"},
		"vault:secret/data/app#password":    {"vault", "secret/data/app#password"},
		"helper:op://vault/item/field":      {"helper", "op://vault/item/field"},
		"my-scheme+v2.x:anything goes here": {"my-scheme+v2.x", "anything goes here"},
	}
	for in, want := range good {
		got, err := ParseRef(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	// A value pasted where a reference belongs must never be echoed.
	for _, in := range []string{"", "hunter2-no-colon", ":hunter2-empty-scheme", "Env:X", "9abc:x", "bad scheme:x", "env:", "env:a\nb", "p@ss:word-secret",
		"x" + strings.Repeat("y", maxRefLen)} {
		_, err := ParseRef(in)
		if !errors.Is(err, ErrBadRef) {
			t.Errorf("ParseRef(%q): %v, want ErrBadRef", in, err)
			continue
		}
		if len(in) > 6 && strings.Contains(err.Error(), in) || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "word-secret") {
			t.Errorf("ParseRef(%q) echoes its input: %v", in, err)
		}
	}
}

func TestParseDecl(t *testing.T) {
	d, err := ParseDecl("API_KEY=env:API_TOKEN")
	if err != nil || d.Name != "API_KEY" || d.Ref != (Ref{"env", "API_TOKEN"}) || d.OnDemand {
		t.Fatalf("%+v %v", d, err)
	}
	for in, kind := range map[string]error{
		"API_KEY":                  ErrBadRef,
		"API_KEY=hunter2-value":    ErrBadRef,
		"=env:X":                   ErrBadName,
		"1KEY=env:X":               ErrBadName,
		"A-B=env:X":                ErrBadName,
		"../x=env:X":               ErrBadName,
		"a/b=env:X":                ErrBadName,
		"KEY=":                     ErrBadRef,
		"K=" + "E" + ":" + "\x00x": ErrBadRef,
	} {
		_, err := ParseDecl(in)
		if !errors.Is(err, kind) {
			t.Errorf("ParseDecl(%q): %v, want %v", in, err, kind)
		}
		var se *Error
		if !errors.As(err, &se) {
			t.Errorf("ParseDecl(%q): %T, want *Error", in, err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseDecl(%q) echoes the value: %v", in, err)
		}
	}
	_, err = ParseDecl("API_KEY=hunter2-value")
	if want := "secret API_KEY: reference has no scheme"; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want prefix %q", err, want)
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"A", "_", "api_key", "A1", strings.Repeat("a", MaxNameLen)} {
		if !ValidName(n) {
			t.Errorf("%q rejected", n)
		}
	}
	for _, n := range []string{"", "1A", "a-b", "a.b", "a/b", "..", "a b", "é", strings.Repeat("a", MaxNameLen+1)} {
		if ValidName(n) {
			t.Errorf("%q accepted", n)
		}
	}
}

func TestDeclarations(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	env := filepath.Join(dir, "app.env")
	if err := os.WriteFile(env, []byte("DB_PASSWORD=hunter2-but-longer\nAPP_ENV=dev\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var d Declarations
	mustAdd := func(s string, onDemand bool) {
		t.Helper()
		decl, err := ParseDecl(s)
		if err != nil {
			t.Fatal(err)
		}
		decl.OnDemand = onDemand
		if err := d.Add(decl); err != nil {
			t.Fatal(err)
		}
	}
	mustAdd("API_KEY=env:API_TOKEN", false)
	mustAdd("CERT=file:cert.pem", false) // relative: stored absolute
	mustAdd("LAZY=dotenv:app.env#APP_ENV", true)
	if got := d.Secrets[1].Ref.Ref; got != filepath.Join(dir, "cert.pem") {
		t.Fatalf("file path not made absolute: %s", got)
	}
	if got := d.Secrets[2].Ref.Ref; got != env+"#APP_ENV" {
		t.Fatalf("dotenv path not made absolute: %s", got)
	}
	if err := d.AddEnvFile("app.env"); err != nil || d.EnvFiles[0] != env {
		t.Fatalf("AddEnvFile: %v %v", err, d.EnvFiles)
	}
	if err := d.AddEnvFile(env); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("same env file twice: %v", err)
	}

	// Duplicates, bad names, unknown schemes, bad references.
	for s, kind := range map[string]error{
		"API_KEY=env:OTHER":       ErrDuplicate,
		"X=nosuch:ref":            ErrUnknownScheme,
		"X=env:not-a-var":         ErrBadRef,
		"X=dotenv:/a.env":         ErrBadRef,
		"X=vault:secret/app#f":    ErrBadRef,
		"X=vault:secret/data/app": ErrBadRef,
		"X=helper:-rf":            ErrBadRef,
	} {
		decl, err := ParseDecl(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Add(decl); !errors.Is(err, kind) {
			t.Errorf("Add(%s): %v, want %v", s, err, kind)
		}
	}
	if err := d.Add(Decl{Name: "bad name", Ref: Ref{"env", "X"}}); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	_, err := ParseDecl("X=nosuch:ref")
	if err != nil {
		t.Fatal(err)
	}
	decl, _ := ParseDecl("X=nosuch:ref")
	err = d.Add(decl)
	if want := `secret X: unknown scheme (known: dotenv, env, file, helper,`; !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "nosuch") {
		t.Fatalf("unknown scheme error %q", err)
	}
	// A value pasted where a reference belongs: what precedes its first
	// ':' is not quoted, nor kept as the error's scheme.
	decl, _ = ParseDecl("Y=s3cretpart:rest-of-the-value")
	err = d.Add(decl)
	var se *Error
	if !errors.Is(err, ErrUnknownScheme) || strings.Contains(err.Error(), "s3cretpart") || !errors.As(err, &se) || se.Scheme != "" {
		t.Fatalf("pasted value: %v", err)
	}
	if _, err := ParseRef("s3cretpart:a\x01b"); err == nil || strings.Contains(err.Error(), "s3cretpart") {
		t.Fatalf("control character: %v", err)
	}

	// Expand reads the env file now, and again at each call.
	decls, err := d.Expand()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, x := range decls {
		names = append(names, x.Name)
	}
	if strings.Join(names, ",") != "API_KEY,CERT,LAZY,DB_PASSWORD,APP_ENV" {
		t.Fatalf("Expand names %v", names)
	}
	if decls[3].Ref != (Ref{"dotenv", env + "#DB_PASSWORD"}) {
		t.Fatalf("env file key ref %v", decls[3].Ref)
	}
	if err := os.WriteFile(env, []byte("DB_PASSWORD=x\nAPP_ENV=dev\nNEW_KEY=y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if decls, err := d.Expand(); err != nil || len(decls) != 6 {
		t.Fatalf("re-read: %d decls, %v", len(decls), err)
	}
	// An env-file key colliding with a declared name is an error.
	if err := os.WriteFile(env, []byte("API_KEY=x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = d.Expand()
	if !errors.Is(err, ErrDuplicate) || !strings.Contains(err.Error(), "--secret env:API_TOKEN and a key of --secrets-env-file "+env) {
		t.Fatalf("collision: %v", err)
	}
	// A key that is not a valid name.
	if err := os.WriteFile(env, []byte("lower_ok=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Expand(); err != nil {
		t.Fatalf("lower-case key: %v", err)
	}
	// A missing env file fails closed.
	os.Remove(env)
	if _, err := d.Expand(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing env file: %v", err)
	}

	// The manifest form holds references only and round-trips.
	j, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Declarations
	if err := json.Unmarshal(j, &back); err != nil || back.Validate() != nil || len(back.Secrets) != 3 || !reflect.DeepEqual(back.Secrets[2], d.Secrets[2]) {
		t.Fatalf("round trip %s: %v", j, err)
	}
	if !strings.Contains(string(j), `{"name":"API_KEY","ref":"env:API_TOKEN"}`) || !strings.Contains(string(j), `"onDemand":true`) {
		t.Fatalf("manifest JSON %s", j)
	}

	// On-demand lookups.
	if _, err := d.OnDemand("LAZY"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"API_KEY", "NOPE", "../etc/passwd", ""} {
		if _, err := d.OnDemand(n); !errors.Is(err, ErrNotDeclared) || !IsDenied(err) {
			t.Errorf("OnDemand(%q): %v", n, err)
		}
	}
}

func TestRegister(t *testing.T) {
	if err := Register("env", envResolver{}); err == nil {
		t.Fatal("built-in scheme replaced")
	}
	if err := Register("Bad", envResolver{}); err == nil {
		t.Fatal("bad scheme name accepted")
	}
	if err := Register("nilres", nil); err == nil {
		t.Fatal("nil resolver accepted")
	}
}

func TestPlaintextWarnings(t *testing.T) {
	d := Declarations{
		Secrets:  []Decl{{Name: "A", Ref: Ref{"env", "X"}}, {Name: "B", Ref: Ref{"vault", "s/data/p#f"}}, {Name: "C", Ref: Ref{"env", "Y"}, OnDemand: true}},
		EnvFiles: []string{"/tmp/app.env"},
	}
	ws := d.PlaintextWarnings()
	if len(ws) != 2 || ws[0].Scheme != "env" || strings.Join(ws[0].Names, ",") != "A,C" || ws[1].Scheme != "dotenv" {
		t.Fatalf("%+v", ws)
	}
	if ws[1].String() != `warning: secret scheme "dotenv" is plaintext: not encrypted at rest, not for production` {
		t.Fatal(ws[1].String())
	}
}
