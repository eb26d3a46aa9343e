package secrets

import (
	"fmt"
	"path/filepath"
	"slices"
)

// Declarations are a workspace's secret declarations as stored in its
// manifest: references only, never values. Env files are stored as paths
// and expanded into one dotenv:PATH#KEY declaration per key each time they
// are resolved, so keys added to the file later are picked up at the next
// start.
type Declarations struct {
	// Secrets are the --secret and --secret-on-demand declarations.
	Secrets []Decl `json:"secrets,omitempty"`
	// EnvFiles are the --secrets-env-file paths, absolute.
	EnvFiles []string `json:"envFiles,omitempty"`
	// EgressRoots are PEM files (absolute paths, read at each start) of CA
	// certificates the secret swap trusts for the real hosts besides the
	// system's (--egress-ca-file): a corporate CA, a test's own.
	EgressRoots []string `json:"egressRoots,omitempty"`
}

// AddEgressRoot records a --egress-ca-file; the path is made absolute and
// read at each start, not now.
func (d *Declarations) AddEgressRoot(path string) error {
	if path == "" || hasControl(path) {
		return &Error{Err: Errorf(ErrBadRef, "--egress-ca-file: want a file path")}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return &Error{Err: Errorf(ErrBadRef, "--egress-ca-file %s: %w", path, err)}
	}
	if !slices.Contains(d.EgressRoots, abs) {
		d.EgressRoots = append(d.EgressRoots, abs)
	}
	return nil
}

// Add validates decl (name, known scheme, well-formed reference), stores
// its canonical form and rejects a name already declared.
func (d *Declarations) Add(decl Decl) error {
	if err := CheckName(decl.Name); err != nil {
		return &Error{Err: err}
	}
	if decl.OnDemand && decl.Egress() {
		return &Error{Name: decl.Name, Err: Errorf(ErrBadRef, "a secret is delivered on demand or swapped at the egress, not both")}
	}
	if (decl.OnDemand || decl.Egress()) && (decl.Env || decl.Mount != "" || decl.Path != "") {
		return &Error{Name: decl.Name, Err: Errorf(ErrBadRef, "only a materialized secret is set as a variable or placed at a path")}
	}
	if (decl.Mount == "") != (decl.Path == "") {
		return &Error{Name: decl.Name, Err: Errorf(ErrBadRef, "a secret's path needs both its mount and its path")}
	}
	for _, o := range d.Secrets {
		if o.Name == decl.Name {
			return &Error{Name: decl.Name, Scheme: decl.Ref.Scheme, Err: Errorf(ErrDuplicate, "declared twice (%s and %s)", describe(o), describe(decl))}
		}
	}
	ref, err := Check(decl.Ref)
	if err != nil {
		return &Error{Name: decl.Name, Scheme: knownScheme(decl.Ref.Scheme), Err: err}
	}
	decl.Ref = ref
	d.Secrets = append(d.Secrets, decl)
	return nil
}

// AddEnvFile records a dotenv file whose every key becomes a secret. The
// path is made absolute; the file is read at each resolution, not now.
func (d *Declarations) AddEnvFile(path string) error {
	if path == "" || hasControl(path) {
		return &Error{Err: Errorf(ErrBadRef, "secrets env file: want a file path")}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return &Error{Err: Errorf(ErrBadRef, "secrets env file %s: %w", path, err)}
	}
	for _, p := range d.EnvFiles {
		if p == abs {
			return &Error{Err: Errorf(ErrDuplicate, "secrets env file %s given twice", abs)}
		}
	}
	d.EnvFiles = append(d.EnvFiles, abs)
	return nil
}

// Validate checks every declaration without reading env files or
// resolving anything: names, duplicates, schemes, reference syntax.
func (d Declarations) Validate() error {
	_, err := d.canonical()
	return err
}

// canonical re-adds every declaration, returning the checked, canonical
// form (for declarations built by hand rather than with Add).
func (d Declarations) canonical() (Declarations, error) {
	var fresh Declarations
	for _, decl := range d.Secrets {
		if err := fresh.Add(decl); err != nil {
			return Declarations{}, err
		}
	}
	for _, p := range d.EnvFiles {
		if err := fresh.AddEnvFile(p); err != nil {
			return Declarations{}, err
		}
	}
	for _, p := range d.EgressRoots {
		if err := fresh.AddEgressRoot(p); err != nil {
			return Declarations{}, err
		}
	}
	return fresh, nil
}

// Expand returns every declaration: the explicit ones, then one
// dotenv:PATH#KEY declaration per key of each env file, read now. A key
// that is not a valid name, or a name declared twice anywhere, is an error.
func (d Declarations) Expand() ([]Decl, error) {
	d, err := d.canonical()
	if err != nil {
		return nil, err
	}
	out := d.Secrets
	seen := make(map[string]Decl, len(out))
	for _, decl := range out {
		seen[decl.Name] = decl
	}
	for _, path := range d.EnvFiles {
		keys, err := dotenvKeys(path)
		if err != nil {
			return nil, &Error{Err: err}
		}
		for _, k := range keys {
			decl := Decl{Name: k, Ref: Ref{Scheme: "dotenv", Ref: path + "#" + k}, envFile: path}
			if !ValidName(k) {
				return nil, &Error{Err: Errorf(ErrBadName, "secrets env file %s: key %q is not a valid secret name ([A-Za-z_][A-Za-z0-9_]*)", path, k)}
			}
			if o, dup := seen[k]; dup {
				return nil, &Error{Name: k, Scheme: "dotenv", Err: Errorf(ErrDuplicate, "declared twice (%s and %s)", describe(o), describe(decl))}
			}
			seen[k] = decl
			out = append(out, decl)
		}
	}
	return out, nil
}

// Egress returns the --secret-egress declarations.
func (d Declarations) Egress() []Decl {
	var out []Decl
	for _, decl := range d.Secrets {
		if decl.Egress() {
			out = append(out, decl)
		}
	}
	return out
}

// EgressHosts are the hosts of every --secret-egress declaration, each
// once, in declaration order.
func (d Declarations) EgressHosts() []string {
	var out []string
	for _, decl := range d.Egress() {
		for _, h := range decl.EgressHosts {
			if !slices.Contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

// EgressDecl returns the --secret-egress declaration of name; any other
// name fails with ErrNotDeclared.
func (d Declarations) EgressDecl(name string) (Decl, error) {
	for _, decl := range d.Secrets {
		if decl.Name == name && decl.Egress() {
			return decl, nil
		}
	}
	return Decl{}, &Error{Name: name, Err: Errorf(ErrNotDeclared, "not declared with --secret-egress: refused")}
}

// OnDemand returns the on-demand declaration of name. Any other name,
// including one declared for boot delivery, fails with ErrNotDeclared.
func (d Declarations) OnDemand(name string) (Decl, error) {
	if !ValidName(name) {
		return Decl{}, &Error{Err: Errorf(ErrNotDeclared, "on-demand fetch of an invalid name refused")}
	}
	for _, decl := range d.Secrets {
		if decl.Name == name && decl.OnDemand {
			return decl, nil
		}
	}
	return Decl{}, &Error{Name: name, Err: Errorf(ErrNotDeclared, "not declared with --secret-on-demand: fetch refused")}
}

func describe(d Decl) string {
	switch {
	case d.OnDemand:
		return fmt.Sprintf("--secret-on-demand %s", d.Ref)
	case d.Egress():
		return fmt.Sprintf("--secret-egress %s", d.Ref)
	case d.envFile != "":
		return fmt.Sprintf("a key of --secrets-env-file %s", d.envFile)
	default:
		return fmt.Sprintf("--secret %s", d.Ref)
	}
}

// PlaintextWarnings returns one warning per plaintext scheme the
// declarations use, without reading env files (so keys of env files are not
// listed by name; the dotenv warning still appears). Use it at declaration
// time; ResolveAll returns the same warnings with every name.
func (d Declarations) PlaintextWarnings() []Warning {
	ws := plaintextWarnings(d.Secrets)
	if len(d.EnvFiles) > 0 && IsPlaintext("dotenv") {
		for _, w := range ws {
			if w.Scheme == "dotenv" {
				return ws
			}
		}
		ws = append(ws, Warning{Scheme: "dotenv"})
	}
	return ws
}
