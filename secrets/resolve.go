package secrets

import (
	"context"
	"errors"
	"os"
)

// Resolve resolves one reference with its scheme's resolver, in the
// environment env (nil means the process's). It fails closed: an unknown
// scheme, an error, an empty value or one larger than MaxValueSize is an
// error, never an empty Value. The caller owns the Value and zeroes it.
func Resolve(ctx context.Context, ref Ref, env LookupEnv) (*Value, error) {
	if env == nil {
		env = os.LookupEnv
	}
	r, err := lookupResolver(ref.Scheme)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, Errorf(ErrUnavailable, "%s reference not resolved: %w", ref.Scheme, err)
	}
	v, err := r.Resolve(ctx, ref.Ref, env)
	if err != nil {
		v.Zero()
		if Kind(err) == nil {
			// A resolver that forgot to classify its error: a failure of
			// unknown kind is treated as the backend being unusable.
			err = &kindError{kind: ErrUnavailable, msg: err.Error(), cause: err}
		}
		return nil, err
	}
	switch n := v.Len(); {
	case n == 0:
		v.Zero()
		return nil, Errorf(ErrEmpty, "%s reference resolved to an empty value (refusing to deliver an empty secret)", ref.Scheme)
	case n > MaxValueSize:
		v.Zero()
		return nil, Errorf(ErrTooLarge, "%s reference resolved to %d bytes, more than the %d-byte limit", ref.Scheme, n, MaxValueSize)
	}
	return v, nil
}

// ResolveDecl resolves one declaration; errors are *Error values naming it.
func ResolveDecl(ctx context.Context, d Decl, env LookupEnv) (*Value, error) {
	v, err := Resolve(ctx, d.Ref, env)
	if err != nil {
		return nil, &Error{Name: d.Name, Scheme: knownScheme(d.Ref.Scheme), Err: err}
	}
	return v, nil
}

// Secret is one resolved secret.
type Secret struct {
	// Name is the declared name.
	Name string `json:"name"`
	// Scheme is the reference's scheme (the "source").
	Scheme string `json:"source"`
	// Value holds the bytes; it prints and encodes as "[redacted N bytes]".
	Value *Value `json:"value"`
}

// Bundle is the set of secrets materialized at a start, in declaration
// order. Zero it as soon as the values have been handed over.
type Bundle struct {
	Secrets []Secret `json:"secrets"`
}

// Get returns the named secret's value.
func (b *Bundle) Get(name string) (*Value, bool) {
	if b == nil {
		return nil, false
	}
	for _, s := range b.Secrets {
		if s.Name == name {
			return s.Value, true
		}
	}
	return nil, false
}

// Zero zeroes every value in the bundle.
func (b *Bundle) Zero() {
	if b == nil {
		return
	}
	for _, s := range b.Secrets {
		s.Value.Zero()
	}
}

// ResolveAll expands d (reading its env files afresh) and resolves every
// secret that is neither on-demand nor swapped at the egress, in declaration order, in the environment
// env (nil means the process's). On-demand secrets are checked (known
// scheme, valid reference) but not resolved. It fails closed on the first
// failure: the values resolved so far are zeroed and the error is an
// *Error naming the secret and the reason. Warnings list the plaintext
// schemes in use, once per scheme.
func ResolveAll(ctx context.Context, d Declarations, env LookupEnv) (*Bundle, []Warning, error) {
	decls, err := d.Expand()
	if err != nil {
		return nil, nil, err
	}
	warnings := plaintextWarnings(decls)
	b := &Bundle{}
	for _, decl := range decls {
		if decl.OnDemand || decl.Egress() {
			if _, err := Check(decl.Ref); err != nil {
				b.Zero()
				return nil, warnings, &Error{Name: decl.Name, Scheme: knownScheme(decl.Ref.Scheme), Err: err}
			}
			continue
		}
		v, err := ResolveDecl(ctx, decl, env)
		if err != nil {
			b.Zero()
			return nil, warnings, err
		}
		b.Secrets = append(b.Secrets, Secret{Name: decl.Name, Scheme: decl.Ref.Scheme, Value: v})
	}
	return b, warnings, nil
}

// ResolveOnDemand resolves the on-demand secret name for one fetch. A name
// that is not declared on-demand fails with ErrNotDeclared (a denial).
func ResolveOnDemand(ctx context.Context, d Declarations, name string, env LookupEnv) (*Value, error) {
	decl, err := d.OnDemand(name)
	if err != nil {
		return nil, err
	}
	return ResolveDecl(ctx, decl, env)
}

// plaintextWarnings returns one warning per plaintext scheme used by decls.
func plaintextWarnings(decls []Decl) []Warning {
	var ws []Warning
	for _, d := range decls {
		if !IsPlaintext(d.Ref.Scheme) {
			continue
		}
		i := 0
		for i < len(ws) && ws[i].Scheme != d.Ref.Scheme {
			i++
		}
		if i == len(ws) {
			ws = append(ws, Warning{Scheme: d.Ref.Scheme})
		}
		ws[i].Names = append(ws[i].Names, d.Name)
	}
	return ws
}

// IsDenied reports whether err is a denial (the backend refused, or the
// secret is not declared for on-demand fetches), as opposed to another
// failure. The audit log records the difference.
func IsDenied(err error) bool {
	return errors.Is(err, ErrDenied) || errors.Is(err, ErrNotDeclared)
}
