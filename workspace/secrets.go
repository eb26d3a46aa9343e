package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/wsdir"
)

// declError marks a malformed or conflicting declaration (a usage error).
func declError(name string, err error) error {
	return fmt.Errorf("workspace %s: %w: %w", name, ErrSecretDecl, err)
}

// checkDecls validates declarations without resolving anything: names,
// schemes, reference syntax, names declared twice, and the env files that
// can be read now (malformed, bad or clashing keys). An env file that is
// missing or unreadable is a resolution matter, reported at start: it may
// be written later.
func checkDecls(d secrets.Declarations) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if _, err := d.Expand(); err != nil && (errors.Is(err, secrets.ErrDuplicate) || errors.Is(err, secrets.ErrBadName) || errors.Is(err, secrets.ErrInvalid)) {
		return err
	}
	return nil
}

// mergeDecls adds the declarations of add to those of base; a name or env
// file already declared is an error, and base is never modified.
func mergeDecls(base, add secrets.Declarations) (secrets.Declarations, error) {
	out := secrets.Declarations{Secrets: slices.Clone(base.Secrets), EnvFiles: slices.Clone(base.EnvFiles)}
	for _, d := range add.Secrets {
		if err := out.Add(d); err != nil {
			return base, err
		}
	}
	for _, p := range add.EnvFiles {
		if err := out.AddEnvFile(p); err != nil {
			return base, err
		}
	}
	out.EgressRoots = slices.Clone(base.EgressRoots)
	for _, p := range add.EgressRoots {
		if err := out.AddEgressRoot(p); err != nil {
			return base, err
		}
	}
	if err := checkDecls(out); err != nil {
		return base, err
	}
	return out, nil
}

// auditMissing reports whether auditing is on and the log is gone.
func (w *wsDir) auditMissing() error {
	p := w.Path(audit.FileName)
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("workspace %s: its secrets audit log %s is missing (removed?) and the records it held are lost: refusing to start; "+
			"to start with a new, empty log run \"microagent start %s --secrets-audit\"", w.Name, p, w.Name)
	} else if err != nil {
		return &wsdir.Error{Name: w.Name, Op: "secrets audit log", Err: err}
	}
	return nil
}

// createAuditLog creates an empty audit log in dir (if there is none), so
// "secret audit" can tell "no accesses yet" from "log removed".
func createAuditLog(path string) error {
	l, err := audit.Open(path)
	if err != nil {
		return err
	}
	return l.Close()
}
