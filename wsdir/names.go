package wsdir

import (
	"fmt"
	"path/filepath"
	"regexp"

	"github.com/microagent-dev/microagent/home"
)

// Workspaces is the folder of the state directory that holds the workspaces.
const Workspaces = "workspaces"

// MaxNameLen is the longest workspace name.
const MaxNameLen = 63

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// maxSocketPath is the longest path a UNIX socket can bind to
// (sizeof(sun_path) - 1).
const maxSocketPath = 107

// ValidateName checks a workspace name: 1-63 characters of [a-z0-9_-],
// starting with a letter or digit. The error wraps ErrInvalidName.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: use 1-%d characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
			ErrInvalidName, name, MaxNameLen)
	}
	return nil
}

// CheckSocketPaths fails when a socket of the workspace would not fit in a
// UNIX socket address, so the problem shows at create rather than at start.
func CheckSocketPaths(h home.Home, name string) error {
	longest := filepath.Join(h.Path(Workspaces, name), RunDir, "qmp.sock") // as long as sup.sock
	if len(longest) > maxSocketPath {
		return fmt.Errorf("%w %q: its socket path %s is %d bytes, over the %d a UNIX socket allows: use a shorter name or a shorter state directory (--state-dir or MICROAGENT_HOME)",
			ErrInvalidName, name, longest, len(longest), maxSocketPath)
	}
	return nil
}
