package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/secrets"
)

func TestAuditFileCheck(t *testing.T) {
	p := filepath.Join(t.TempDir(), audit.FileName)
	l, err := audit.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, _ := os.Lstat(p)
	a := &auditFile{log: l, path: p, fi: fi}
	if err := a.check(); err != nil {
		t.Fatal(err)
	}
	os.Rename(p, p+".old")
	os.WriteFile(p, nil, 0o600)
	if err := a.check(); !errors.Is(err, errAuditReplaced) || strings.Contains(err.Error(), p) {
		t.Fatalf("replaced log: %v", err)
	}
	var none *auditFile
	if none.check() != nil || none.logOrNil() != nil {
		t.Fatal("auditing off must not refuse")
	}
}

func TestScrubEnv(t *testing.T) {
	t.Setenv("SCRUB_ME", "secret-value")
	t.Setenv("MICROAGENT_SCRUB_KEEP", "x")
	path := os.Getenv("PATH")
	env := envSnapshot()
	var d secrets.Declarations
	for _, s := range []string{"A=env:SCRUB_ME", "B=env:PATH", "C=env:MICROAGENT_SCRUB_KEEP"} {
		decl, err := secrets.ParseDecl(s)
		if err != nil {
			t.Fatal(err)
		}
		d.Add(decl)
	}
	scrubEnv(d)
	if _, ok := os.LookupEnv("SCRUB_ME"); ok {
		t.Fatal("SCRUB_ME still in the environment")
	}
	if os.Getenv("PATH") != path || os.Getenv("MICROAGENT_SCRUB_KEEP") != "x" {
		t.Fatal("PATH or a MICROAGENT_ setting was removed")
	}
	if v, ok := env("SCRUB_ME"); !ok || v != "secret-value" {
		t.Fatal("the snapshot lost the value")
	}
}

func TestReadyMsgFinal(t *testing.T) {
	for m, want := range map[*Ready]bool{
		{}:                        true, // EOF
		{OK: true}:                true,
		{Error: "x"}:              true,
		{Warnings: []string{"w"}}: false,
	} {
		if m.Final() != want {
			t.Errorf("%+v: final %v", *m, !want)
		}
	}
}

// TestCheckPurged: only names delivered this boot, each once, go into a
// snapshot's record of the purge; an invalid name is not repeated.
func TestCheckPurged(t *testing.T) {
	s := &supSecrets{}
	s.noteSent("TOKEN", []byte("value-one"))
	s.noteSent("DB", []byte("value-two"))
	for _, ok := range [][]string{nil, {}, {"TOKEN"}, {"DB", "TOKEN"}} {
		if err := s.checkPurged(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for names, want := range map[string]string{
		"OTHER":          "OTHER, which is not a secret delivered",
		"TOKEN,TOKEN":    "TOKEN twice",
		"../../etc/x":    "not a valid secret name",
		"TOKEN,bad name": "not a valid secret name",
	} {
		err := s.checkPurged(strings.Split(names, ","))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "etc") || strings.Contains(err.Error(), "bad name") {
			t.Errorf("%q: %v, want %q", names, err, want)
		}
	}
}
