package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/secrets"
)

func openLog(t *testing.T) (*Log, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ws", FileName)
	l, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, p
}

func TestPathFor(t *testing.T) {
	h := home.Home{Root: "/state"}
	if got := PathFor(h, "vaulted"); got != "/state/workspaces/vaulted/secrets-audit.log" {
		t.Fatal(got)
	}
}

func TestAppendReadVerify(t *testing.T) {
	l, p := openLog(t)
	at := time.Date(2026, 6, 11, 9, 16, 32, 221898563, time.UTC)
	if err := l.Append(Record{Time: at, Name: "DB_PASSWORD", Access: OnDemand, Result: OK}); err != nil {
		t.Fatal(err)
	}
	// A round second still prints nine fractional digits.
	if err := l.Append(Record{Time: time.Date(2026, 6, 11, 9, 17, 0, 0, time.FixedZone("CEST", 7200)), Name: "API_KEY", Access: Boot, Result: Denied, Reason: "vault denied"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Record{Name: "API_KEY", Access: Rehydrate, Result: Failed}); err != nil {
		t.Fatal(err)
	}
	recs, err := Read(p)
	if err != nil || len(recs) != 3 {
		t.Fatalf("Read: %d records, %v", len(recs), err)
	}
	if got := recs[0].String(); got != "2026-06-11T09:16:32.221898563Z DB_PASSWORD on-demand ok" {
		t.Fatalf("line %q", got)
	}
	if got := recs[1].String(); got != "2026-06-11T07:17:00.000000000Z API_KEY boot denied" {
		t.Fatalf("line %q", got)
	}
	if recs[0].Prev != zeroHash || recs[1].Prev != recs[0].Hash || recs[2].Prev != recs[1].Hash || recs[1].Reason != "vault denied" {
		t.Fatalf("chain %+v", recs)
	}
	if time.Since(recs[2].Time) > time.Minute || recs[2].Time.Location() != time.UTC {
		t.Fatalf("default time %v", recs[2].Time)
	}
	rep, err := Verify(p)
	if err != nil || !rep.OK() || rep.Records != 3 {
		t.Fatalf("Verify: %+v %v", rep, err)
	}
	raw, _ := os.ReadFile(p)
	first := strings.SplitN(string(raw), "\n", 2)[0]
	if !regexp.MustCompile(`^\{"time":"2026-06-11T09:16:32\.221898563Z","name":"DB_PASSWORD","access":"on-demand","result":"ok","prev":"0{64}","hash":"[0-9a-f]{64}"\}$`).MatchString(first) {
		t.Fatalf("line format: %s", first)
	}
	// Modes: file 0600, directory 0700.
	fi, _ := os.Stat(p)
	di, _ := os.Stat(filepath.Dir(p))
	if fi.Mode().Perm() != 0o600 || di.Mode().Perm() != 0o700 {
		t.Fatalf("modes %v %v", fi.Mode(), di.Mode())
	}
	// JSON form for --json.
	j, _ := json.Marshal(recs[0])
	var back Record
	if err := json.Unmarshal(j, &back); err != nil || !back.Time.Equal(at) || back.Name != "DB_PASSWORD" {
		t.Fatalf("json %s: %v", j, err)
	}
	// Reopening continues the chain.
	l.Close()
	l2, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if err := l2.Append(Record{Name: "X", Access: Boot, Result: OK}); err != nil {
		t.Fatal(err)
	}
	if rep, _ := Verify(p); !rep.OK() || rep.Records != 4 {
		t.Fatalf("after reopen %+v", rep)
	}
}

func TestAppendRejectsBadRecords(t *testing.T) {
	l, _ := openLog(t)
	for _, r := range []Record{
		{Name: "A", Access: "peek", Result: OK},
		{Name: "A", Access: Boot, Result: "maybe"},
		{Name: "../x", Access: Boot, Result: OK},
	} {
		if err := l.Append(r); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
}

// tamper rewrites line n (1-based) of the log with f.
func tamper(t *testing.T, p string, f func(lines []string) []string) {
	t.Helper()
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	lines = f(lines)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func fiveRecords(t *testing.T) string {
	t.Helper()
	l, p := openLog(t)
	for i := 0; i < 5; i++ {
		res := OK
		if i == 2 {
			res = Denied
		}
		if err := l.Append(Record{Name: "DB_PASSWORD", Access: OnDemand, Result: res}); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestVerifyFindsTampering(t *testing.T) {
	cases := map[string]struct {
		edit     func([]string) []string
		firstBad int
		reason   string
	}{
		"denied rewritten as ok": {func(l []string) []string {
			l[2] = strings.Replace(l[2], `"result":"denied"`, `"result":"ok"`, 1)
			return l
		}, 3, "hash mismatch: the record was modified"},
		"last record modified": {func(l []string) []string {
			l[4] = strings.Replace(l[4], `"name":"DB_PASSWORD"`, `"name":"OTHER"`, 1)
			return l
		}, 5, "hash mismatch"},
		"record removed": {func(l []string) []string {
			return append(l[:2], l[3:]...)
		}, 3, "record 3 does not follow record 2"},
		"records swapped": {func(l []string) []string {
			l[1], l[2] = l[2], l[1]
			return l
		}, 2, "does not follow"},
		"head removed": {func(l []string) []string {
			return l[1:]
		}, 1, "records before it were removed"},
		"garbage line": {func(l []string) []string {
			l[3] = "not json"
			return l
		}, 4, "malformed record"},
		"unknown field": {func(l []string) []string {
			l[0] = strings.Replace(l[0], `"name"`, `"value":"x","name"`, 1)
			return l
		}, 1, "malformed record"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := fiveRecords(t)
			tamper(t, p, c.edit)
			rep, err := Verify(p)
			if err != nil || rep.FirstBad != c.firstBad || !strings.Contains(rep.Reason, c.reason) {
				t.Fatalf("Verify: %+v %v; want first bad %d (%s)", rep, err, c.firstBad, c.reason)
			}
		})
	}
}

// A forger who recomputes the modified record's own hash is still caught
// by the next record's prev.
func TestVerifyFindsRehashedForgery(t *testing.T) {
	p := fiveRecords(t)
	recs, _ := Read(p)
	forged := recs[2]
	forged.Result = OK
	line, _, err := encode(forged, forged.Prev)
	if err != nil {
		t.Fatal(err)
	}
	tamper(t, p, func(l []string) []string { l[2] = string(line); return l })
	rep, _ := Verify(p)
	if rep.FirstBad != 4 || !strings.Contains(rep.Reason, "does not follow record 3") {
		t.Fatalf("%+v", rep)
	}
}

func TestPartialLastRecord(t *testing.T) {
	p := fiveRecords(t)
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2026-06-11T09:16:32.221898563Z","na`)
	f.Close()
	rep, _ := Verify(p)
	if rep.FirstBad != 6 || !strings.Contains(rep.Reason, "incomplete") {
		t.Fatalf("%+v", rep)
	}
	l, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = l.Append(Record{Name: "A", Access: Boot, Result: OK})
	if err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("append after a partial record: %v", err)
	}
	if _, err := Read(p); err == nil || !strings.Contains(err.Error(), "record 6 is incomplete") {
		t.Fatalf("Read: %v", err)
	}
}

func TestConcurrentAppends(t *testing.T) {
	l1, p := openLog(t)
	l2, err := Open(p) // a second handle, as a second process would have
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(l *Log) {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				if err := l.Append(Record{Name: "S", Access: OnDemand, Result: OK}); err != nil {
					t.Error(err)
				}
			}
		}([]*Log{l1, l2}[i%2])
	}
	wg.Wait()
	rep, err := Verify(p)
	if err != nil || !rep.OK() || rep.Records != 80 {
		t.Fatalf("%+v %v", rep, err)
	}
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, nil, 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	if _, err := Open(link); err == nil {
		t.Fatal("symlink accepted")
	}
	if _, err := Open(dir); err == nil {
		t.Fatal("directory accepted")
	}
	if _, err := Open(filepath.Join(target, "sub", FileName)); err == nil {
		t.Fatal("path under a file accepted")
	}
	// A too-open existing log is tightened.
	loose := filepath.Join(dir, "loose.log")
	os.WriteFile(loose, nil, 0o644)
	l, err := Open(loose)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if fi, _ := os.Stat(loose); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestGate(t *testing.T) {
	l, p := openLog(t)
	secret := []byte("gate-s3cret-value")
	v := secrets.NewValue(bytes.Clone(secret))
	if err := l.Gate("DB_PASSWORD", OnDemand, v, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.Bytes(), secret) {
		t.Fatal("value changed by a successful gate")
	}
	// A denial from the backend and an undeclared name: both "denied".
	denied := &secrets.Error{Name: "DB_PASSWORD", Err: secrets.Errorf(secrets.ErrDenied, "vault denied reading secret/data/db (HTTP 403)")}
	if err := l.Gate("DB_PASSWORD", OnDemand, nil, denied); err != denied {
		t.Fatalf("denied passthrough: %v", err)
	}
	var d secrets.Declarations
	_, nd := d.OnDemand("NOT_DECLARED")
	l.Gate("NOT_DECLARED", OnDemand, nil, nd)
	l.Gate("../../etc/passwd", OnDemand, nil, &secrets.Error{Err: secrets.Errorf(secrets.ErrNotDeclared, "refused")})
	missing := &secrets.Error{Name: "API_KEY", Err: secrets.Errorf(secrets.ErrNotFound, "environment variable X is not set")}
	l.Gate("API_KEY", Boot, nil, missing)

	recs, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Name+" "+string(r.Access)+" "+string(r.Result))
	}
	want := "DB_PASSWORD on-demand ok|DB_PASSWORD on-demand denied|NOT_DECLARED on-demand denied|(invalid name) on-demand denied|API_KEY boot error"
	if strings.Join(got, "|") != want {
		t.Fatalf("records %v", got)
	}
	if recs[1].Reason != "vault denied reading secret/data/db (HTTP 403)" {
		t.Fatalf("reason %q", recs[1].Reason)
	}
	raw, _ := os.ReadFile(p)
	if bytes.Contains(raw, secret) {
		t.Fatal("the audit log contains the value")
	}
	// Auditing off: a nil log passes through.
	var off *Log
	if err := off.Gate("A", Boot, v, nil); err != nil {
		t.Fatal(err)
	}
}

// TestUnwritableLogWithholdsValue: when the record cannot be written the
// value is zeroed and not released.
func TestUnwritableLogWithholdsValue(t *testing.T) {
	l, p := openLog(t)
	full, err := os.OpenFile("/dev/full", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open /dev/full (every Linux has it): %v", err)
	}
	l.f.Close()
	l.f = full // every write now fails with ENOSPC, as on a full disk
	backing := []byte("withheld-s3cret-value")
	v := secrets.NewValue(backing)
	err = l.Gate("DB_PASSWORD", OnDemand, v, nil)
	if !errors.Is(err, ErrWithheld) || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("Gate on a full disk: %v", err)
	}
	if v.Len() != 0 || !bytes.Equal(backing, make([]byte, len(backing))) {
		t.Fatal("the withheld value was not zeroed")
	}
	if strings.Contains(err.Error(), "withheld-s3cret") {
		t.Fatal("error shows the value")
	}
	if raw, _ := os.ReadFile(p); len(raw) != 0 {
		t.Fatal("something was recorded")
	}

	// A closed log withholds too; so does GateBundle, zeroing every value.
	l.Close()
	a, b := []byte("bundle-value-a"), []byte("bundle-value-b")
	bundle := &secrets.Bundle{Secrets: []secrets.Secret{{Name: "A", Value: secrets.NewValue(a)}, {Name: "B", Value: secrets.NewValue(b)}}}
	if err := l.GateBundle(Boot, bundle, nil); !errors.Is(err, ErrWithheld) {
		t.Fatalf("GateBundle: %v", err)
	}
	if !bytes.Equal(a, make([]byte, len(a))) || !bytes.Equal(b, make([]byte, len(b))) {
		t.Fatal("bundle not zeroed")
	}
}

func TestGateBundle(t *testing.T) {
	l, p := openLog(t)
	t.Setenv("AUDIT_TEST_A", "value-a-123456")
	var d secrets.Declarations
	for _, s := range []string{"A=env:AUDIT_TEST_A", "B=env:AUDIT_TEST_MISSING"} {
		decl, _ := secrets.ParseDecl(s)
		if err := d.Add(decl); err != nil {
			t.Fatal(err)
		}
	}
	b, _, err := secrets.ResolveAll(context.Background(), d, nil)
	if err := l.GateBundle(Boot, b, err); !errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("GateBundle: %v", err)
	}
	d.Secrets = d.Secrets[:1]
	b, _, err = secrets.ResolveAll(context.Background(), d, nil)
	if err := l.GateBundle(Rehydrate, b, err); err != nil {
		t.Fatal(err)
	}
	recs, _ := Read(p)
	if len(recs) != 2 || recs[0].Name != "B" || recs[0].Result != Failed || recs[1].Name != "A" || recs[1].Access != Rehydrate || recs[1].Result != OK {
		t.Fatalf("records %+v", recs)
	}
}

// TestVerifyHead: the chain alone does not show a rewrite by whoever can
// write the log (a forger who rebuilds every hash passes Verify); a head
// exported before does, and so does a log cut short before that head.
// Records appended after it are accepted.
func TestVerifyHead(t *testing.T) {
	p := fiveRecords(t)
	rep, err := Verify(p)
	if err != nil || !rep.OK() || rep.Records != 5 || CheckHead(rep.Head) != nil {
		t.Fatalf("Verify: %+v %v", rep, err)
	}
	head := rep.Head
	if rep, err := VerifyHead(p, head); err != nil || !rep.OK() || rep.HeadAt != 5 {
		t.Fatalf("VerifyHead at the head: %+v %v", rep, err)
	}
	l, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Record{Name: "LATER", Access: Boot, Result: OK}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if rep, err := VerifyHead(p, head); err != nil || !rep.OK() || rep.HeadAt != 5 || rep.Records != 6 {
		t.Fatalf("VerifyHead after an append: %+v %v", rep, err)
	}
	orig, _ := os.ReadFile(p)

	// The forger turns the denial into an ok and rebuilds the chain.
	recs, _ := Read(p)
	recs[2].Result = OK
	var forged []byte
	prev := zeroHash
	for _, r := range recs {
		line, hash, err := encode(r, prev)
		if err != nil {
			t.Fatal(err)
		}
		forged, prev = append(append(forged, line...), '\n'), hash
	}
	os.WriteFile(p, forged, 0o600)
	if rep, _ := Verify(p); !rep.OK() {
		t.Fatalf("the rebuilt chain: %+v (expected to pass: the chain is not keyed)", rep)
	}
	if rep, err := VerifyHead(p, head); err != nil || rep.OK() || !rep.HeadMissing || !strings.Contains(rep.Reason, "rewritten or cut short") {
		t.Fatalf("VerifyHead of the rebuilt chain: %+v %v", rep, err)
	}

	// Cut short before the head: intact, but not leading to it.
	lines := bytes.SplitAfter(orig, []byte("\n"))
	os.WriteFile(p, bytes.Join(lines[:3], nil), 0o600)
	if rep, _ := VerifyHead(p, head); rep.OK() || !rep.HeadMissing {
		t.Fatalf("VerifyHead of a cut log: %+v", rep)
	}
	// A broken chain is reported as such, head or not.
	os.WriteFile(p, bytes.Replace(orig, []byte(`"result":"denied"`), []byte(`"result":"ok"`), 1), 0o600)
	if rep, _ := VerifyHead(p, head); rep.OK() || rep.FirstBad != 3 || rep.HeadMissing {
		t.Fatalf("VerifyHead of a modified record: %+v", rep)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("G", 64), strings.ToUpper(head)} {
		if _, err := VerifyHead(p, bad); err == nil {
			t.Errorf("head %q accepted", bad)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty.log")
	os.WriteFile(empty, nil, 0o600)
	if rep, err := VerifyHead(empty, zeroHash); err != nil || !rep.OK() || rep.Head != zeroHash {
		t.Fatalf("the empty log: %+v %v", rep, err)
	}
}
