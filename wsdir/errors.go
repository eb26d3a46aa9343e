package wsdir

import "errors"

// Errors returned (wrapped, with the workspace name and what to do) by this
// package and by the workspace and supervisor packages; test for them with
// errors.Is.
var (
	// ErrInvalidName: the name is not 1-63 of [a-z0-9_-] starting with a
	// letter or digit, or makes the workspace's socket paths too long.
	ErrInvalidName = errors.New("invalid workspace name")
	// ErrNotFound: no workspace has this name.
	ErrNotFound = errors.New("no such workspace")
	// ErrExists: a workspace of this name already exists.
	ErrExists = errors.New("workspace already exists")
	// ErrBusy: another command holds the workspace's lock, or the
	// workspace is between states (starting, halting). Try again later.
	ErrBusy = errors.New("busy: another command holds the lock")
	// ErrRunning: the operation needs a workspace that is not running.
	ErrRunning = errors.New("workspace is running")
	// ErrNotRunning: the operation needs a running workspace.
	ErrNotRunning = errors.New("workspace is not running")
	// ErrPaused: the operation needs a workspace whose VM is not paused.
	ErrPaused = errors.New("workspace is paused")
)

// Error is a failure of an operation on one workspace: its message is
// "workspace NAME: OP: ERR" (without OP when empty), and it unwraps to Err.
type Error struct {
	// Name is the workspace.
	Name string
	// Op says what was being done ("write manifest"), or is empty.
	Op string
	// Err is what went wrong.
	Err error
}

func (e *Error) Error() string {
	if e.Op == "" {
		return "workspace " + e.Name + ": " + e.Err.Error()
	}
	return "workspace " + e.Name + ": " + e.Op + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }
