package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/wsdir"
)

// resolveTimeout bounds the resolution of a start's secrets (a backend
// that does not answer must not hang the start forever).
const resolveTimeout = time.Minute

// deliverTimeout bounds handing the resolved values to the guest.
const deliverTimeout = 30 * time.Second

// supSecrets is a supervisor's share of the secrets: the resolved
// materialization (until delivered), the audit log, and what on-demand
// fetches resolve with.
type supSecrets struct {
	cfg   wsdir.SecretsConfig
	prep  *conduit.Prepared
	env   secrets.LookupEnv
	audit *auditFile
	lg    *log.Logger
	// sentValues fingerprints what was materialized in the guest.
	sentValues delivered
	// sentNames are the names materialized in the guest this boot.
	namesMu   sync.Mutex
	sentNames map[string]bool
	// limit and flood bound what the guest's on-demand fetches cost the
	// host: resolutions, records and log lines.
	limit *conduit.Limiter
	flood *floodGate
	// auditGone is set once a fetch found the audit log replaced.
	auditGone atomic.Bool
	// swap is this boot's secret swap (nil: none declared).
	swap *swapState
}

// noteSent remembers a value about to be materialized: its fingerprint
// and its name. The caller still owns (and zeroes) value.
func (s *supSecrets) noteSent(name string, value []byte) {
	s.sentValues.add(name, value)
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	if s.sentNames == nil {
		s.sentNames = map[string]bool{}
	}
	s.sentNames[name] = true
}

// checkPurged checks the guest's purge reply before it goes into
// snapshot.json: the guest (root in it is the workload's) may answer
// anything, and only names of secrets materialized this boot, each once,
// are an account of a purge. The error never repeats an invalid name.
func (s *supSecrets) checkPurged(names []string) error {
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	seen := map[string]bool{}
	for _, n := range names {
		switch {
		case !secrets.ValidName(n):
			return errors.New("the guest's purge reply names something that is not a valid secret name")
		case !s.sentNames[n]:
			return fmt.Errorf("the guest's purge reply names %s, which is not a secret delivered to it", n)
		case seen[n]:
			return fmt.Errorf("the guest's purge reply names %s twice", n)
		}
		seen[n] = true
	}
	return nil
}

// sent returns the fingerprints of the delivered values (nil-safe).
func (s *supSecrets) sent() *delivered {
	if s == nil {
		return nil
	}
	return &s.sentValues
}

// auditFile is the open audit log and the file it was opened on: records
// must land in the log at its path, so a log removed or replaced after the
// start (the open descriptor would still write to the old file) refuses
// every access instead.
type auditFile struct {
	log  *audit.Log
	path string
	fi   os.FileInfo
}

// errAuditReplaced is what the guest is told (the host's paths are none of
// its business); the supervisor log says which file.
var errAuditReplaced = errors.New("secret access refused: the workspace's secrets audit log was removed or replaced since it started, so the access cannot be recorded")

func (a *auditFile) check() error {
	if a == nil {
		return nil
	}
	fi, err := os.Lstat(a.path)
	if err != nil || !os.SameFile(fi, a.fi) {
		return errAuditReplaced
	}
	return nil
}

func (a *auditFile) logOrNil() *audit.Log {
	if a == nil {
		return nil
	}
	return a.log
}

func (a *auditFile) close() {
	if a != nil {
		a.log.Close()
	}
}

// prepareSecrets runs in the supervisor before the VM boots: it opens the
// audit log (when auditing is on) and resolves every materialized secret,
// failing closed on the first that cannot be. References to the
// environment are resolved in the start command's environment (received
// as a file, see EnvFile: it was never this process's exec-time
// environment), captured here; those variables are then removed from the
// process environment so a helper program does not inherit the values.
// The VMM and passt get no environment of ours at all (vmm.ChildEnv).
func prepareSecrets(ctx context.Context, w *wsdir.Dir, cfg wsdir.SecretsConfig, lg *log.Logger) (*supSecrets, error) {
	s := &supSecrets{cfg: cfg, env: envSnapshot(), lg: lg, limit: conduit.NewFetchLimiter()}
	if cfg.Audit {
		p := w.Path(audit.FileName)
		l, err := audit.Open(p)
		if err != nil {
			return nil, fmt.Errorf("secrets audit is on but its log cannot be opened (%w): refusing to start", err)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("secrets audit log %s: %w", p, err)
		}
		s.audit = &auditFile{log: l, path: p, fi: fi}
	}
	s.flood = newFloodGate(s.audit.logOrNil(), lg, s.declared)
	if cfg.HasDecls() {
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		prep, err := conduit.Resolve(rctx, cfg.Declarations, s.env)
		cancel()
		if err != nil {
			// The failed materialization is an access too: record it.
			if aerr := s.audit.logOrNil().GateBundle(audit.Boot, nil, err); aerr != nil {
				err = aerr
			}
			s.audit.close()
			return nil, err
		}
		s.prep = prep
	}
	scrubEnv(cfg.Declarations)
	lg.Printf("secrets: %d declared, %d env files, audit %s: resolved", len(cfg.Secrets), len(cfg.EnvFiles), onOff(cfg.Audit))
	return s, nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// warnings returns the plaintext-scheme warning lines.
func (s *supSecrets) warnings() []string {
	if s == nil || s.prep == nil {
		return nil
	}
	var out []string
	for _, w := range s.prep.Warnings {
		out = append(out, w.String())
	}
	return out
}

// deliver installs the on-demand handler and hands the materialized secrets
// to the guest (recording each in the audit log first); the host's copies
// are zeroed whatever happens.
func (s *supSecrets) deliver(ctx context.Context, c *channel.Client, kind audit.Access) error {
	if s == nil || !s.cfg.HasDecls() {
		return nil
	}
	defer s.prep.Zero()
	c.SetFetchHandler(s.fetch)
	if err := s.audit.check(); err != nil {
		return fmt.Errorf("secrets audit log %s: %w", s.audit.path, err)
	}
	dctx, cancel := context.WithTimeout(ctx, deliverTimeout)
	defer cancel()
	s.withEgress(s.prep)
	s.prep.Each(s.noteSent)
	if err := s.prep.Deliver(dctx, c, s.audit.logOrNil(), kind); err != nil {
		return fmt.Errorf("deliver the secrets: %w", err)
	}
	return nil
}

// fetch answers one on-demand fetch from the guest, within the limits.
// What the guest is told is the kind of failure only (a
// *conduit.FetchError); the whole error goes to the supervisor log.
func (s *supSecrets) fetch(ctx context.Context, name string) ([]byte, func(), error) {
	if err := s.audit.check(); err != nil {
		// Once: the condition lasts, and a guest can fetch in a loop.
		if !s.auditGone.Swap(true) {
			s.lg.Printf("on-demand fetch of %s refused: the audit log %s was removed or replaced (every later fetch is refused too; logged once)", shownName(name), s.audit.path)
		}
		return nil, nil, err
	}
	done, err := s.limit.Acquire()
	if err != nil {
		s.flood.failed(name, audit.OnDemand, err)
		return nil, nil, &conduit.FetchError{Name: name, Err: err}
	}
	defer done()
	return conduit.OnDemand(s.cfg.Declarations, s.env, s.flood)(ctx, name)
}

// declared reports whether name is declared (on demand or not): the names
// whose failed fetches the audit log keeps apart.
func (s *supSecrets) declared(name string) bool {
	for _, d := range s.cfg.Secrets {
		if d.Name == name {
			return true
		}
	}
	return false
}

// flushFetches records the failed fetches counted so far (nil-safe).
func (s *supSecrets) flushFetches() {
	if s != nil && s.flood != nil {
		s.flood.close()
	}
}

// close drops whatever is still held.
func (s *supSecrets) close() {
	if s == nil {
		return
	}
	s.prep.Zero()
	s.flushFetches()
	s.audit.close()
}

// envSnapshot captures the process environment for resolving env:
// references and the backends' configuration (VAULT_ADDR ...).
func envSnapshot() secrets.LookupEnv {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// scrubEnv removes from the process environment the variables env:
// references name (the snapshot keeps them), so that the programs the
// supervisor starts with its environment (secret helpers) do not inherit
// secret values. PATH and
// microagent's own settings are left, whatever a declaration says: the
// supervisor needs them to run QEMU.
func scrubEnv(d secrets.Declarations) {
	for _, decl := range d.Secrets {
		if decl.Ref.Scheme != "env" {
			continue
		}
		v := decl.Ref.Ref
		if v == "PATH" || strings.HasPrefix(v, "MICROAGENT_") {
			continue
		}
		os.Unsetenv(v)
	}
}

// withEgress adds this boot's placeholders and the workspace CA to a
// delivery; the placeholders' files are in the purge's account too.
func (s *supSecrets) withEgress(p *conduit.Prepared) {
	if s.swap == nil {
		return
	}
	p.SetEgress(s.swap.placeholders, s.swap.caCert)
	for _, ph := range s.swap.placeholders {
		s.noteSent(ph.Name, nil)
	}
}

// materializes reports whether the workspace puts secrets in /run/secrets.
func (s *supSecrets) materializes() bool { return s != nil && s.cfg.HasDecls() }

// recordPurge notes the purge in the supervisor log (the names only).
func (s *supSecrets) recordPurge(names []string) {
	s.lg.Printf("secrets: guest purged %d materialized secrets before a snapshot", len(names))
}

// rehydrate resolves the materialized secrets again and hands them to the
// guest (an audit record of kind rehydrate each).
func (s *supSecrets) rehydrate(ctx context.Context, c *channel.Client) error {
	if !s.materializes() {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	prep, err := conduit.Resolve(rctx, s.cfg.Declarations, s.env)
	cancel()
	if err != nil {
		if aerr := s.audit.logOrNil().GateBundle(audit.Rehydrate, nil, err); aerr != nil {
			err = aerr
		}
		return err
	}
	defer prep.Zero()
	if err := s.audit.check(); err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, deliverTimeout)
	defer cancel()
	s.withEgress(prep)
	prep.Each(s.noteSent)
	return prep.Deliver(dctx, c, s.audit.logOrNil(), audit.Rehydrate)
}
