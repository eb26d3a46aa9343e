package conduit

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
	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm"
)

// maxEgressRoots bounds one --egress-ca-file.
const maxEgressRoots = 1 << 20

// NewSwapLimiter bounds the resolutions the secret swap makes for one
// guest. Every request resolves its value afresh, so the bounds are wider
// than on-demand fetches' (16 concurrent requests are an ordinary client's
// pool, and the interceptor admits 64 at once), yet a guest looping on
// requests costs the host at most this many resolutions (helper
// processes, backend calls); past them it gets 502.
func NewSwapLimiter() *Limiter { return NewLimiter(64, 100, 200) }

// NewSwap builds the network's secret swap for the --secret-egress
// declarations of d (nil, nil when there are none): this boot's
// placeholders (a fresh nonce, so unique per boot and name), the CA
// (caCert, caKey: PEM) and d's --egress-ca-file roots, read now. It
// returns the placeholders for the guest too. An unreadable roots file
// fails: the swap would verify the real hosts against less than asked.
func NewSwap(d secrets.Declarations, caCert, caKey []byte, src vmm.SwapSource) (*vmm.Swap, []channel.Placeholder, error) {
	decls := d.Egress()
	if len(decls) == 0 {
		return nil, nil, nil
	}
	sw := &vmm.Swap{CACert: caCert, CAKey: caKey, Source: src}
	for _, p := range d.EgressRoots {
		b, err := readRoots(p)
		if err != nil {
			return nil, nil, fmt.Errorf("--egress-ca-file %s: %w: the secret swap would not verify the hosts as asked", p, err)
		}
		sw.ExtraRoots = append(sw.ExtraRoots, b...)
	}
	nonce := make([]byte, credswap.MinBootNonce)
	rand.Read(nonce)
	var phs []channel.Placeholder
	for _, decl := range decls {
		ph := credswap.Placeholder(decl.Name, nonce)
		sw.Rules = append(sw.Rules, vmm.SwapRule{Name: decl.Name, Placeholder: ph, Hosts: decl.EgressHosts})
		phs = append(phs, channel.Placeholder{Name: decl.Name, Value: ph})
	}
	return sw, phs, nil
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

// SwapSource resolves the values of --secret-egress secrets for the
// network, one request at a time and afresh each time (a rotation or a
// revocation takes effect on the next request), within Limit. The network
// learns a failure's kind only.
type SwapSource struct {
	Decls secrets.Declarations
	Env   secrets.LookupEnv
	Limit *Limiter
	// Record, when set, records each access (kind audit.Egress, with
	// where the value goes) before the value is released; an error
	// withholds it. Check, when set, runs first and refuses every access
	// while it fails (an audit log removed, say).
	Record func(audit.Record) error
	Check  func() error
	// Logf receives what the network is not told (the whole failure).
	Logf func(format string, args ...any)
}

// Value implements vmm.SwapSource.
func (s *SwapSource) Value(ctx context.Context, r vmm.SwapRequest) ([]byte, error) {
	decl, err := s.Decls.EgressDecl(r.Name)
	if err != nil || !vmm.MatchName(decl.EgressHosts, r.Host) {
		return nil, &vmm.SwapError{Kind: "not declared for this host"}
	}
	if s.Check != nil {
		if err := s.Check(); err != nil {
			return nil, &vmm.SwapError{Kind: audit.ErrWithheld.Error()}
		}
	}
	if s.Limit != nil {
		done, err := s.Limit.Acquire()
		if err != nil {
			return nil, &vmm.SwapError{Kind: KindText(err)}
		}
		defer done()
	}
	rec := audit.Record{Name: r.Name, Access: audit.Egress, Dest: r.Method + " " + r.Host + r.Path}
	v, err := secrets.ResolveDecl(ctx, decl, s.Env)
	rec.Result = audit.ResultOf(err)
	if err != nil {
		rec.Reason = secrets.Reason(err)
		s.logf("secret swap of %s for %s: %v", r.Name, rec.Dest, err)
	}
	if s.Record != nil {
		if aerr := s.Record(rec); aerr != nil {
			v.Zero()
			s.logf("secret swap of %s withheld: %v", r.Name, aerr)
			return nil, &vmm.SwapError{Kind: audit.ErrWithheld.Error()}
		}
	}
	if err != nil {
		return nil, &vmm.SwapError{Kind: KindText(err)}
	}
	// The network zeroes the copy it is given; the Value is zeroed here.
	out := append([]byte(nil), v.Bytes()...)
	v.Zero()
	return out, nil
}

func (s *SwapSource) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}
