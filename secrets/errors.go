package secrets

import (
	"errors"
	"fmt"
)

// Kinds of failure. Every error this package returns wraps exactly one of
// them, so callers (and the audit log) can tell a denial from a missing
// value from a backend outage with errors.Is. None of them ever carries a
// secret value.
var (
	// ErrBadName: a secret name is not environment-variable shaped.
	ErrBadName = errors.New("invalid secret name")
	// ErrBadRef: a reference is malformed (no scheme, bad syntax).
	ErrBadRef = errors.New("invalid secret reference")
	// ErrDuplicate: two declarations use the same name.
	ErrDuplicate = errors.New("duplicate secret name")
	// ErrUnknownScheme: no resolver is registered for the scheme.
	ErrUnknownScheme = errors.New("unknown secret scheme")
	// ErrEmpty: the reference resolved to zero bytes.
	ErrEmpty = errors.New("secret is empty")
	// ErrNotFound: the variable, file, key or backend path does not exist.
	ErrNotFound = errors.New("secret not found")
	// ErrNoField: a backend secret exists but lacks the named field.
	ErrNoField = errors.New("secret field not found")
	// ErrDenied: the backend or the file system refused access.
	ErrDenied = errors.New("access to secret denied")
	// ErrUnavailable: the backend is down, sealed or timed out; retrying
	// later may work.
	ErrUnavailable = errors.New("secret backend unavailable")
	// ErrTooLarge: the value exceeds MaxValueSize.
	ErrTooLarge = errors.New("secret too large")
	// ErrConfig: the scheme's configuration (VAULT_ADDR, VAULT_TOKEN,
	// MICROAGENT_SECRET_HELPER ...) is missing or invalid.
	ErrConfig = errors.New("secret backend not configured")
	// ErrHelper: the helper program failed.
	ErrHelper = errors.New("secret helper failed")
	// ErrInvalid: the value exists but cannot be used (not a string, not a
	// regular file ...).
	ErrInvalid = errors.New("secret value unusable")
	// ErrNotDeclared: an on-demand fetch named a secret that is not
	// declared on-demand. Audit logs record it as a denial.
	ErrNotDeclared = errors.New("secret not declared on-demand")
)

// kindError is a failure of one kind with a message written for the
// operator. The message never contains a value.
type kindError struct {
	kind  error
	msg   string
	cause error
}

func (e *kindError) Error() string { return e.msg }

func (e *kindError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// Errorf returns an error of the given kind (one of the Err* sentinels)
// whose message is the formatted text, for resolvers written outside this
// package. A %w verb in format wraps a cause as with fmt.Errorf. Never pass
// a secret value as an argument.
func Errorf(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &kindError{kind: kind, msg: err.Error(), cause: errors.Unwrap(err)}
}

// Error is a failure to declare or resolve one named secret. Its message
// names the secret and the reason, never the value.
type Error struct {
	// Name is the secret's name, or "" when the declaration was too
	// malformed to name it safely.
	Name string
	// Scheme is the reference's scheme when known.
	Scheme string
	// Err is the reason; it wraps one of the Err* kinds.
	Err error
}

func (e *Error) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("secret declaration: %v", e.Err)
	}
	return fmt.Sprintf("secret %s: %v", e.Name, e.Err)
}

// Unwrap returns the reason.
func (e *Error) Unwrap() error { return e.Err }

// Reason returns the reason part of err: for an *Error, its inner error's
// message without the "secret NAME:" prefix; else err's message.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Err != nil {
		return e.Err.Error()
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// Kind returns the Err* sentinel err wraps, or nil when it wraps none.
func Kind(err error) error {
	for _, k := range []error{ErrBadName, ErrBadRef, ErrDuplicate, ErrUnknownScheme, ErrEmpty, ErrNotFound,
		ErrNoField, ErrDenied, ErrUnavailable, ErrTooLarge, ErrConfig, ErrHelper, ErrInvalid, ErrNotDeclared} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
