package wsdir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/microagent-dev/microagent/tarcopy"
)

// Files given at create (--file HOST:GUEST[:MODE]) are archived into the
// workspace folder at create, so later changes to the host files do not
// matter, and put into the guest by the first start that boots, before
// the start reports ready; then they are forgotten. A start whose copy
// fails fails (the workspace is then failed) and keeps them for the next
// start.
const (
	FilesDir      = "files"      // pending files: one archive per spec
	FilesManifest = "files.json" // their guest paths, in order
)

// PendingFile is one entry of files/files.json.
type PendingFile struct {
	// Spec is the spec as given (its host path for messages only).
	Spec tarcopy.FileSpec `json:"spec"`
	// Archive is the file name in files/ of its archive.
	Archive string `json:"archive"`
}

// PendingFiles lists the files still to put into the guest.
func (w *Dir) PendingFiles() ([]PendingFile, error) {
	b, err := os.ReadFile(w.Path(FilesDir, FilesManifest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &Error{Name: w.Name, Op: "pending files", Err: err}
	}
	var list []PendingFile
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("workspace %s: pending files list %s is corrupt: %w", w.Name, w.Path(FilesDir, FilesManifest), err)
	}
	return list, nil
}
