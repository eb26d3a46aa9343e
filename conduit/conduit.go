// Package conduit carries resolved secrets from the host into a guest: it
// joins package secrets (resolution), package audit (the access log) and the
// channel (delivery). Both one-shot runs and workspace supervisors use it, so
// the rules live in one place: resolve before the VM boots, record before a
// value leaves the host, zero every host copy once it is sent.
package conduit

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/secrets"
)

// One size limit for a secret: what resolution accepts is what the channel
// carries. Either constant moving alone overflows one of these (a compile
// error), so a value can never pass resolution and then fail delivery after
// the VM booted and its access was recorded.
const (
	_ = uint(secrets.MaxValueSize - channel.MaxSecret)
	_ = uint(channel.MaxSecret - secrets.MaxValueSize)
)

// Prepared is a resolved materialization, waiting for the guest.
type Prepared struct {
	decls  secrets.Declarations
	bundle *secrets.Bundle
	// placeholders and egressCA go with the values (SetEgress).
	placeholders []channel.Placeholder
	egressCA     []byte
	// Warnings are the plaintext schemes in use.
	Warnings []secrets.Warning
}

// Resolve resolves every materialized secret of d (failing closed on the
// first that cannot be resolved) and checks the on-demand references. Call
// it before the VM boots. env nil means the process's environment.
func Resolve(ctx context.Context, d secrets.Declarations, env secrets.LookupEnv) (*Prepared, error) {
	b, ws, err := secrets.ResolveAll(ctx, d, env)
	if err != nil {
		return nil, err
	}
	return &Prepared{decls: d, bundle: b, Warnings: ws}, nil
}

// Empty reports whether there is nothing to deliver: no secret of any kind.
func (p *Prepared) Empty() bool {
	return p == nil || (len(p.bundle.Secrets) == 0 && len(p.onDemand()) == 0 && len(p.placeholders) == 0)
}

// SetEgress makes the delivery carry the placeholders of the secrets the
// network swaps (--secret-egress) and the CA certificate it terminates
// their TLS with (see channel.SecretsRequest).
func (p *Prepared) SetEgress(placeholders []channel.Placeholder, caCert []byte) {
	if p != nil {
		p.placeholders, p.egressCA = placeholders, caCert
	}
}

// Each calls f with every materialized value, before delivery (to
// fingerprint them, say); f must not keep value.
func (p *Prepared) Each(f func(name string, value []byte)) {
	if p == nil {
		return
	}
	for _, s := range p.bundle.Secrets {
		f(s.Name, s.Value.Bytes())
	}
}

// Zero drops the resolved values (on any path that does not deliver them).
func (p *Prepared) Zero() {
	if p != nil {
		p.bundle.Zero()
	}
}

func (p *Prepared) onDemand() []string {
	var names []string
	for _, d := range p.decls.Secrets {
		if d.OnDemand {
			names = append(names, d.Name)
		}
	}
	return names
}

// PrintWarnings writes the plaintext warnings, one line each.
func (p *Prepared) PrintWarnings(w io.Writer) {
	if p == nil || w == nil {
		return
	}
	for _, wr := range p.Warnings {
		fmt.Fprintln(w, wr.String())
	}
}

// Deliver records each access (when log is not nil) and only then sends the
// values to the guest, which writes them to /run/secrets before answering;
// the values are zeroed whatever happens. access is audit.Boot or
// audit.Rehydrate.
func (p *Prepared) Deliver(ctx context.Context, c *channel.Client, log *audit.Log, access audit.Access) error {
	defer p.Zero()
	if p.Empty() {
		return nil
	}
	if err := log.GateBundle(access, p.bundle, nil); err != nil {
		return err
	}
	req := channel.SecretsRequest{OnDemand: p.onDemand(), Placeholders: p.placeholders, EgressCA: p.egressCA}
	values := make([][]byte, 0, len(p.bundle.Secrets))
	where := map[string]secrets.Decl{}
	for _, d := range p.decls.Secrets {
		where[d.Name] = d
	}
	for _, s := range p.bundle.Secrets {
		d := where[s.Name] // env-file keys are files only
		req.Items = append(req.Items, channel.SecretItem{Name: s.Name, Env: d.Env, Mount: d.Mount, Path: d.Path})
		values = append(values, s.Value.Bytes())
	}
	if err := c.DeliverSecrets(ctx, req, values); err != nil {
		return fmt.Errorf("deliver secrets to the guest: %w", err)
	}
	return nil
}

// Gater records one access and decides whether its value may leave the
// host, as (*audit.Log).Gate does; a supervisor's coalescing log is one too.
type Gater interface {
	Gate(name string, access audit.Access, v *secrets.Value, resolveErr error) error
}

// OnDemand returns the channel's answer to the guest's fetches: each fetch
// re-resolves the reference (so rotation and revocation apply at once), is
// recorded in log before the value is released, and undeclared names are
// denied (and recorded). log nil records nothing. A failure is a
// *FetchError: its text, which reaches the workload, is the kind only.
func OnDemand(d secrets.Declarations, env secrets.LookupEnv, log Gater) channel.FetchFunc {
	if log == nil {
		log = (*audit.Log)(nil)
	}
	return func(ctx context.Context, name string) ([]byte, func(), error) {
		v, err := secrets.ResolveOnDemand(ctx, d, name, env)
		if err := log.Gate(name, audit.OnDemand, v, err); err != nil {
			return nil, nil, &FetchError{Name: name, Err: err}
		}
		return v.Bytes(), v.Zero, nil
	}
}

// FetchError is a failed on-demand fetch. Its Error, the text the
// workload gets, names the secret and the kind of failure only ("access to
// secret denied", "secret backend unavailable" ...): the full error may
// hold a helper's stderr (a backend token, even), host paths or a
// backend's configuration, and goes to the host's log instead.
type FetchError struct {
	// Name is the name the guest asked for.
	Name string
	// Err is the whole failure, for the host's log; errors.Is sees it.
	Err error
}

func (e *FetchError) Error() string {
	name := e.Name
	if !secrets.ValidName(name) {
		name = "(invalid name)" // the guest's own bytes: not echoed
	}
	return fmt.Sprintf("secret %s: %s (the details stay on the host)", name, KindText(e.Err))
}

// Unwrap returns the whole failure.
func (e *FetchError) Unwrap() error { return e.Err }

// KindText is the part of err the guest may see: one fixed text per kind
// (a fetch's, or the secret swap's answer).
func KindText(err error) string {
	switch {
	case errors.Is(err, ErrLimited):
		return ErrLimited.Error()
	case errors.Is(err, audit.ErrWithheld):
		return audit.ErrWithheld.Error()
	}
	if k := secrets.Kind(err); k != nil {
		return k.Error()
	}
	return "the fetch failed on the host"
}
