package secrets

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// LookupEnv looks up an environment variable, like os.LookupEnv. Resolvers
// read their configuration (and the env scheme its values) through it, so
// callers decide which environment a resolution sees.
type LookupEnv func(key string) (string, bool)

// Resolver fetches the values of one scheme. Implementations must never put
// a value in an error, and should return errors made with Errorf so that
// they wrap one of the Err* kinds.
type Resolver interface {
	// Resolve returns the value ref names. ref is the part after
	// "<scheme>:". The returned Value is owned by the caller, who zeroes it.
	Resolve(ctx context.Context, ref string, env LookupEnv) (*Value, error)
	// Plaintext reports whether the scheme reads unencrypted values the
	// operator keeps on this host (env, files), which earns a warning.
	Plaintext() bool
}

// Validator is implemented by resolvers that can check a reference without
// resolving it. Validate returns the canonical form to store in a manifest
// (for instance a relative path made absolute, since later starts run in
// another directory).
type Validator interface {
	Validate(ref string) (canonical string, err error)
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Resolver{}
)

// Register makes r the resolver of scheme. Schemes are lower-case
// ([a-z][a-z0-9+.-]*); registering one twice is an error, so a library
// user cannot silently replace a built-in scheme.
func Register(scheme string, r Resolver) error {
	if !validScheme(scheme) {
		return fmt.Errorf("register secret scheme %q: want lower-case letters, digits, '+', '-', '.'", scheme)
	}
	if r == nil {
		return fmt.Errorf("register secret scheme %q: nil resolver", scheme)
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[scheme]; dup {
		return fmt.Errorf("register secret scheme %q: already registered", scheme)
	}
	registry[scheme] = r
	return nil
}

// Lookup returns the resolver registered for scheme.
func Lookup(scheme string) (Resolver, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	r, ok := registry[scheme]
	return r, ok
}

// Schemes returns the registered schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s := make([]string, 0, len(registry))
	for k := range registry {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

func mustRegister(scheme string, r Resolver) {
	if err := Register(scheme, r); err != nil {
		panic(err) // built-in schemes are registered once, at init
	}
}

func init() {
	mustRegister("env", envResolver{})
	mustRegister("file", fileResolver{})
	mustRegister("dotenv", dotenvResolver{})
	mustRegister("vault", &VaultResolver{})
	mustRegister("helper", &HelperResolver{})
	mustRegister("k8s", K8sResolver{})
}

// lookupResolver returns the resolver of ref's scheme or an
// ErrUnknownScheme error listing the known ones.
func lookupResolver(scheme string) (Resolver, error) {
	if r, ok := Lookup(scheme); ok {
		return r, nil
	}
	// The scheme is not quoted: an unknown one is most likely the start of
	// a value pasted where a reference belongs (its text before ':').
	return nil, Errorf(ErrUnknownScheme, "unknown scheme (known: %s): want <scheme>:<ref>, e.g. env:VAR", joinSchemes())
}

// knownScheme returns scheme when it is registered and "" otherwise, for an
// Error's Scheme: an unknown one may be the start of a pasted value.
func knownScheme(scheme string) string {
	if _, ok := Lookup(scheme); ok {
		return scheme
	}
	return ""
}

func joinSchemes() string {
	s := ""
	for i, k := range Schemes() {
		if i > 0 {
			s += ", "
		}
		s += k
	}
	return s
}

// Check verifies that ref's scheme is registered and, when its resolver
// can, that the reference is well formed. It returns the canonical
// reference to store.
func Check(ref Ref) (Ref, error) {
	r, err := lookupResolver(ref.Scheme)
	if err != nil {
		return Ref{}, err
	}
	if v, ok := r.(Validator); ok {
		c, err := v.Validate(ref.Ref)
		if err != nil {
			return Ref{}, err
		}
		ref.Ref = c
	}
	return ref, nil
}

// IsPlaintext reports whether scheme is a registered plaintext scheme.
func IsPlaintext(scheme string) bool {
	r, ok := Lookup(scheme)
	return ok && r.Plaintext()
}

// PlaintextWarning returns the warning printed for a plaintext scheme.
func PlaintextWarning(scheme string) string {
	return fmt.Sprintf("warning: secret scheme %q is plaintext: not encrypted at rest, not for production", scheme)
}

// Warning says that some declared secrets use a plaintext scheme.
type Warning struct {
	// Scheme is the plaintext scheme.
	Scheme string `json:"scheme"`
	// Names are the secrets that use it, in declaration order.
	Names []string `json:"names"`
}

// String returns the warning line (see PlaintextWarning).
func (w Warning) String() string { return PlaintextWarning(w.Scheme) }
