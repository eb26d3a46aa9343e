package wsdir

import "github.com/microagent-dev/microagent/errcode"

// The workspace errors cross processes (supervisor replies, the readiness
// message) under these codes; see package errcode.
func init() {
	for code, err := range map[errcode.Code]error{
		"workspace_invalid_name": ErrInvalidName,
		"workspace_not_found":    ErrNotFound,
		"workspace_exists":       ErrExists,
		"busy":                   ErrBusy,
		"running":                ErrRunning,
		"not_running":            ErrNotRunning,
		"paused":                 ErrPaused,
		"snapshot_not_found":     ErrSnapshotNotFound,
		"snapshot_invalid_tag":   ErrInvalidTag,
	} {
		errcode.Register(code, err)
	}
}
