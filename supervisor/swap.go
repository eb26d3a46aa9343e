package supervisor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// maxEgressRoots bounds one --egress-ca-file.
const maxEgressRoots = 1 << 20

// swapState is this boot's share of the secret swap (--secret-egress):
// the placeholders the guest holds and the CA certificate it trusts.
type swapState struct {
	placeholders []channel.Placeholder
	caCert       []byte
}

// prepareSwap makes this boot's placeholders (a fresh nonce: unique per
// boot and name) and loads the workspace CA, and returns the network's
// swap, whose values s resolves per request; nil when no secret is
// declared with --secret-egress. An unreadable --egress-ca-file fails the
// start: the swap would verify the real hosts against less than asked.
func (s *supSecrets) prepareSwap(w *wsdir.Dir) (*vmm.Swap, error) {
	decls := s.cfg.Egress()
	if len(decls) == 0 {
		return nil, nil
	}
	nonce := make([]byte, credswap.MinBootNonce)
	rand.Read(nonce)
	cert, key, err := w.EgressCA()
	if err != nil {
		return nil, err
	}
	sw := &vmm.Swap{CACert: cert, CAKey: key, Source: s}
	for _, p := range s.cfg.Declarations.EgressRoots {
		b, err := readRoots(p)
		if err != nil {
			clear(key)
			return nil, fmt.Errorf("--egress-ca-file %s: %w: the secret swap would not verify the hosts as asked; the workspace was not started", p, err)
		}
		sw.ExtraRoots = append(sw.ExtraRoots, b...)
	}
	st := &swapState{caCert: cert}
	for _, d := range decls {
		ph := credswap.Placeholder(d.Name, nonce)
		sw.Rules = append(sw.Rules, vmm.SwapRule{Name: d.Name, Placeholder: ph, Hosts: d.EgressHosts})
		st.placeholders = append(st.placeholders, channel.Placeholder{Name: d.Name, Value: ph})
	}
	s.swap = st
	return sw, nil
}

func readRoots(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxEgressRoots+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxEgressRoots {
		return nil, fmt.Errorf("larger than %d bytes", maxEgressRoots)
	}
	if !strings.Contains(string(b), "-----BEGIN CERTIFICATE-----") {
		return nil, errors.New("no PEM certificate in it")
	}
	return b, nil
}

// Value implements vmm.SwapSource for the network: it resolves the value
// of a --secret-egress secret for one request, afresh each time (a
// rotation or revocation takes effect on the next request), within the
// fetch limits, and records the access (with where the value goes) in the
// audit log before the value leaves this process; a record that cannot
// be written withholds it. The network learns a failure's kind only.
func (s *supSecrets) Value(ctx context.Context, r vmm.SwapRequest) ([]byte, error) {
	decl, err := s.cfg.EgressDecl(r.Name)
	if err != nil || !vmm.MatchName(decl.EgressHosts, r.Host) {
		return nil, &vmm.SwapError{Kind: "not declared for this host"}
	}
	if err := s.audit.check(); err != nil {
		if !s.auditGone.Swap(true) {
			s.lg.Printf("secret swap of %s refused: the audit log %s was removed or replaced (every later use is refused too; logged once)", r.Name, s.audit.path)
		}
		return nil, &vmm.SwapError{Kind: audit.ErrWithheld.Error()}
	}
	done, err := s.limit.Acquire()
	if err != nil {
		return nil, &vmm.SwapError{Kind: conduit.KindText(err)}
	}
	defer done()
	rec := audit.Record{Name: r.Name, Access: audit.Egress, Dest: r.Method + " " + r.Host + r.Path}
	v, err := secrets.ResolveDecl(ctx, decl, s.env)
	rec.Result = audit.ResultOf(err)
	if err != nil {
		rec.Reason = secrets.Reason(err)
		s.lg.Printf("secret swap of %s for %s: %v", r.Name, rec.Dest, err)
	}
	if l := s.audit.logOrNil(); l != nil {
		if aerr := l.Append(rec); aerr != nil {
			v.Zero()
			s.lg.Printf("secret swap of %s withheld: %v", r.Name, aerr)
			return nil, &vmm.SwapError{Kind: audit.ErrWithheld.Error()}
		}
	}
	if err != nil {
		return nil, &vmm.SwapError{Kind: conduit.KindText(err)}
	}
	// The network zeroes the copy it is given; the Value is zeroed here.
	out := append([]byte(nil), v.Bytes()...)
	v.Zero()
	return out, nil
}
