package secrets

import (
	"strings"
)

// MaxNameLen bounds a secret name: it becomes a file name under
// /run/secrets, so it must fit NAME_MAX.
const MaxNameLen = 255

// maxRefLen bounds a reference; references are paths and keys, not data.
const maxRefLen = 4096

// Ref is a reference to where a secret's value lives: "<scheme>:<ref>". It
// is safe to print and to store; it is never the value.
type Ref struct {
	// Scheme selects the resolver: env, file, dotenv, vault, helper, or
	// one registered with Register.
	Scheme string
	// Ref is the scheme-specific part after the first ':'.
	Ref string
}

// String returns "<scheme>:<ref>".
func (r Ref) String() string { return r.Scheme + ":" + r.Ref }

// MarshalText encodes the reference as "<scheme>:<ref>".
func (r Ref) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses "<scheme>:<ref>" (see ParseRef).
func (r *Ref) UnmarshalText(b []byte) error {
	p, err := ParseRef(string(b))
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// ParseRef parses "<scheme>:<ref>". It checks the syntax only; whether the
// scheme is registered and the reference fits it is checked by Check.
//
// Error messages never quote s: a value pasted where a reference belongs
// must not end up in a terminal or a log.
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, Errorf(ErrBadRef, "empty reference: want <scheme>:<ref>, e.g. env:VAR")
	}
	if len(s) > maxRefLen {
		return Ref{}, Errorf(ErrBadRef, "reference longer than %d bytes", maxRefLen)
	}
	scheme, ref, ok := strings.Cut(s, ":")
	if !ok {
		return Ref{}, Errorf(ErrBadRef, "reference has no scheme: want <scheme>:<ref>, e.g. env:VAR or file:PATH")
	}
	if scheme == "" {
		return Ref{}, Errorf(ErrBadRef, "reference has an empty scheme: want <scheme>:<ref>, e.g. env:VAR")
	}
	if !validScheme(scheme) {
		return Ref{}, Errorf(ErrBadRef, "reference has an invalid scheme (want lower-case letters, digits, '+', '-', '.'; e.g. env:VAR)")
	}
	if ref == "" {
		return Ref{}, Errorf(ErrBadRef, "reference has nothing after the scheme's ':': want <scheme>:<ref>, e.g. env:VAR")
	}
	if hasControl(ref) {
		return Ref{}, Errorf(ErrBadRef, "reference contains a control character")
	}
	return Ref{Scheme: scheme, Ref: ref}, nil
}

// validScheme reports whether s is a URI-style scheme in lower case.
func validScheme(s string) bool {
	if s == "" || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// ValidName reports whether name can name a secret:
// [A-Za-z_][A-Za-z0-9_]*, at most MaxNameLen bytes. Such a name is a valid
// environment variable and a safe file name (no '/', no "..").
func ValidName(name string) bool {
	if name == "" || len(name) > MaxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// CheckName returns nil when name is valid, else an ErrBadName error. The
// message quotes the name only when it is short and printable.
func CheckName(name string) error {
	if ValidName(name) {
		return nil
	}
	if name == "" {
		return Errorf(ErrBadName, "empty secret name: want NAME=<scheme>:<ref>")
	}
	return Errorf(ErrBadName, "secret name must match [A-Za-z_][A-Za-z0-9_]* (at most %d bytes): letters, digits and '_', not starting with a digit", MaxNameLen)
}

// Decl declares one secret: its name and the reference it resolves from.
type Decl struct {
	// Name is the secret's name: the file name under /run/secrets and the
	// name an on-demand fetch asks for.
	Name string `json:"name"`
	// Ref is where the value lives.
	Ref Ref `json:"ref"`
	// OnDemand secrets are never materialized at boot; the guest fetches
	// them one at a time and each fetch resolves the reference afresh.
	OnDemand bool `json:"onDemand,omitempty"`
	// EgressHosts, when set (--secret-egress), keep the value out of the
	// guest altogether: the guest holds a placeholder, and the network
	// puts the value in its place only in HTTPS requests to these hosts
	// (--egress-allow syntax: api.example.com, .example.com), resolving
	// it at each request. Never materialized, never fetched on demand.
	EgressHosts []string `json:"egressHosts,omitempty"`
	// Env also sets the materialized value as the variable Name in every
	// exec's environment (a Kubernetes env var from a Secret).
	Env bool `json:"env,omitempty"`
	// Mount and Path also make the materialized value appear at
	// Mount/Path in the guest (a Kubernetes secret volume; the guest
	// checks them with channel.CheckSecretTarget, as the node does).
	Mount string `json:"mount,omitempty"`
	Path  string `json:"path,omitempty"`

	envFile string // set by Expand: the env file this key came from
}

// Egress reports whether d is a --secret-egress declaration.
func (d Decl) Egress() bool { return len(d.EgressHosts) > 0 }

// String returns "NAME=<scheme>:<ref>", with " (on-demand)" when it applies.
func (d Decl) String() string {
	s := d.Name + "=" + d.Ref.String()
	if d.OnDemand {
		s += " (on-demand)"
	}
	if d.Egress() {
		s += "@" + strings.Join(d.EgressHosts, ",")
	}
	return s
}

// ParseDecl parses "NAME=<scheme>:<ref>" (the --secret flag's argument).
// Errors are *Error values naming the secret when the name is valid; they
// never quote the text after '=' (it may be a value pasted by mistake).
// ParseEgressDecl parses a --secret-egress declaration,
// NAME=<scheme>:<ref>@HOST[,HOST...]: the hosts follow the last '@' (a
// reference may hold one; a host cannot). The hosts' syntax is the
// network's to check (vmm.ParseAllowName); here each must be non-empty.
func ParseEgressDecl(s string) (Decl, error) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return Decl{}, &Error{Err: Errorf(ErrBadRef, "want NAME=<scheme>:<ref>@HOST[,HOST...], e.g. API_KEY=env:API_TOKEN@api.example.com (no '@' found: name the hosts the value may be sent to)")}
	}
	d, err := ParseDecl(s[:i])
	if err != nil {
		return Decl{}, err
	}
	for _, h := range strings.Split(s[i+1:], ",") {
		if h = strings.TrimSpace(h); h == "" {
			return Decl{}, &Error{Name: d.Name, Err: Errorf(ErrBadRef, "an empty host after '@': give HOST[,HOST...], e.g. api.example.com")}
		}
		d.EgressHosts = append(d.EgressHosts, h)
	}
	return d, nil
}

func ParseDecl(s string) (Decl, error) {
	name, ref, ok := strings.Cut(s, "=")
	if !ok {
		return Decl{}, &Error{Err: Errorf(ErrBadRef, "want NAME=<scheme>:<ref>, e.g. API_KEY=env:API_TOKEN (no '=' found)")}
	}
	if err := CheckName(name); err != nil {
		return Decl{}, &Error{Err: err}
	}
	r, err := ParseRef(ref)
	if err != nil {
		return Decl{}, &Error{Name: name, Err: err}
	}
	return Decl{Name: name, Ref: r}, nil
}
