package secrets

import "github.com/microagent-dev/microagent/errcode"

// The kinds cross processes (the supervisor resolves, the start command
// reports) under these codes; see package errcode.
func init() {
	for code, err := range map[errcode.Code]error{
		"secret_bad_name":       ErrBadName,
		"secret_bad_ref":        ErrBadRef,
		"secret_duplicate":      ErrDuplicate,
		"secret_unknown_scheme": ErrUnknownScheme,
		"secret_empty":          ErrEmpty,
		"secret_not_found":      ErrNotFound,
		"secret_no_field":       ErrNoField,
		"secret_denied":         ErrDenied,
		"secret_unavailable":    ErrUnavailable,
		"secret_too_large":      ErrTooLarge,
		"secret_config":         ErrConfig,
		"secret_helper":         ErrHelper,
		"secret_invalid":        ErrInvalid,
		"secret_not_declared":   ErrNotDeclared,
	} {
		errcode.Register(code, err)
	}
}
