package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/wsdir"
)

// fetchSecrets is a supervisor's secrets share with on-demand decls (and
// auditing into dir when audited), its environment env, and its log.
func fetchSecrets(t *testing.T, dir string, audited bool, env map[string]string, decls ...string) (*supSecrets, *syncBuffer) {
	t.Helper()
	var d secrets.Declarations
	for _, s := range decls {
		name, ref, _ := strings.Cut(s, "=")
		r, err := secrets.ParseRef(ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Add(secrets.Decl{Name: name, Ref: r, OnDemand: true}); err != nil {
			t.Fatal(err)
		}
	}
	lb := &syncBuffer{}
	s := &supSecrets{
		cfg: wsdir.SecretsConfig{Declarations: d, Audit: audited},
		env: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		lg:  log.New(lb, "", 0), limit: conduit.NewFetchLimiter(),
	}
	if audited {
		p := filepath.Join(dir, audit.FileName)
		l, err := audit.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(p)
		s.audit = &auditFile{log: l, path: p, fi: fi}
	}
	s.flood = newFloodGate(s.audit.logOrNil(), s.lg, s.declared)
	t.Cleanup(s.close)
	return s, lb
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// A failed fetch tells the guest the kind of failure only: not a helper's
// stderr (a path and a token planted there), not a host path, not Vault's
// configuration. The supervisor log has the details.
func TestFetchErrorsCarryNoHostDetail(t *testing.T) {
	dir := t.TempDir()
	plantedPath := filepath.Join(dir, "private", "op-session")
	token := "hvs.LEAKED0123456789abcdefTOKEN"
	helper := filepath.Join(dir, "helper")
	os.WriteFile(helper, []byte(fmt.Sprintf("#!/bin/sh\necho 'cannot read %s: session %s expired' >&2\nexit 3\n", plantedPath, token)), 0o755)
	s, lb := fetchSecrets(t, dir, true, map[string]string{"MICROAGENT_SECRET_HELPER": helper},
		"HELPED=helper:prod/db", "FILED=file:"+plantedPath, "VAULTED=vault:secret/data/app#pw")
	for _, tc := range []struct{ name, kind string }{
		{"HELPED", secrets.ErrHelper.Error()},
		{"FILED", secrets.ErrNotFound.Error()},
		{"VAULTED", secrets.ErrConfig.Error()},
		{"UNDECLARED", secrets.ErrNotDeclared.Error()},
		{"bad name\x00" + token, secrets.ErrNotDeclared.Error()},
	} {
		_, _, err := s.fetch(context.Background(), tc.name)
		if err == nil {
			t.Fatalf("%q: fetched", tc.name)
		}
		msg := err.Error()
		for _, leak := range []string{plantedPath, dir, token, "VAULT_", "prod/db", "stderr"} {
			if strings.Contains(msg, leak) {
				t.Errorf("%q: the guest is told %q, which holds %q", tc.name, msg, leak)
			}
		}
		if !strings.Contains(msg, tc.kind) {
			t.Errorf("%q: the guest is told %q, want the kind %q", tc.name, msg, tc.kind)
		}
	}
	if l := lb.String(); !strings.Contains(l, plantedPath) || !strings.Contains(l, "VAULT_ADDR") {
		t.Errorf("the supervisor log lacks the details:\n%s", l)
	}
}

// A fetch flood runs at most conduit.FetchesAtOnce helpers at once, refuses the
// excess at once and counts it; failures are coalesced in the audit log,
// and every ok fetch has its record.
func TestFetchFloodLimitedAndCoalesced(t *testing.T) {
	dir := t.TempDir()
	helper := filepath.Join(dir, "helper")
	running := filepath.Join(dir, "running")
	os.Mkdir(running, 0o700)
	// Each run leaves a file while it runs; the test samples how many.
	os.WriteFile(helper, []byte("#!/bin/sh\ntouch "+running+"/$$\nsleep 0.3\nrm "+running+"/$$\necho value\n"), 0o755)
	s, _ := fetchSecrets(t, dir, true, map[string]string{"MICROAGENT_SECRET_HELPER": helper, "TOK": "tok-value"},
		"SLOW=helper:x", "TOK=env:TOK")
	s.flood.window = 300 * time.Millisecond

	stopSampling := testenv.PeakEntries(running)
	const flood = 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, limited := 0, 0
	for range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, release, err := s.fetch(context.Background(), "SLOW")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
				release()
			case errors.Is(err, conduit.ErrLimited):
				limited++
			default:
				t.Errorf("fetch: %v", err)
			}
		}()
	}
	wg.Wait()
	peak := stopSampling()
	t.Logf("%d concurrent helper fetches: %d ok, %d refused; at most %d helpers ran at once", flood, ok, limited, peak)
	if peak > conduit.FetchesAtOnce || ok > conduit.FetchBurst || ok+limited != flood || int64(limited) != s.limit.Refused() {
		t.Errorf("peak %d helpers (at most %d), %d ok (at most %d), %d refused (counted %d)", peak, conduit.FetchesAtOnce, ok, conduit.FetchBurst, limited, s.limit.Refused())
	}

	// A denied flood over made-up names, with good fetches in between.
	time.Sleep(2 * time.Second) // the bucket refills
	good, tries := 0, 0
	for i := range 500 {
		if i%50 == 0 {
			tries++
			if _, release, err := s.fetch(context.Background(), "TOK"); err == nil {
				release()
				good++
			}
		}
		s.fetch(context.Background(), fmt.Sprintf("MADE_UP_%d", i))
	}
	s.flood.close()
	recs, err := audit.Read(s.audit.path)
	if err != nil {
		t.Fatal(err)
	}
	tally := TallyFetches(recs)
	oks, failedRecs, failures := tally.OK, tally.FailedRecords, tally.Failed
	total := flood + 500 + tries
	t.Logf("%d fetches (%d ok, %d refused or denied) made %d audit records (%d ok)", total, ok+good, total-ok-good, len(recs), oks)
	if oks != ok+good {
		t.Errorf("%d ok records for %d ok fetches", oks, ok+good)
	}
	if failures != total-ok-good {
		t.Errorf("the records count %d failed fetches, there were %d", failures, total-ok-good)
	}
	if failedRecs > 40 {
		t.Errorf("%d records for %d failed fetches: not coalesced", failedRecs, failures)
	}
}
