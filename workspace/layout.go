package workspace

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
)

// File and folder names inside a workspace folder.
const (
	manifestFile = "manifest.json"
	recordFile   = "state.json"
	diskFile     = "disk.ext4"
	lockFile     = "lock"
	recordLock   = "state.lock"
	runDir       = "run"
	logsDir      = "logs"
	supSockName  = "sup.sock"
	planFile     = "boot.json"
	supLogName   = "supervisor.log"
	consoleName  = "console.log"
	prevConsole  = "console.prev.log"
	tmpPrefix    = ".tmp-"
	trashPrefix  = ".trash-"
	hiddenPrefix = "."
	filePerm     = 0o600
	dirPerm      = 0o700
)

// wsDir is one workspace's folder.
type wsDir struct {
	h    home.Home
	name string
	dir  string
}

func newWS(h home.Home, name string) *wsDir {
	return &wsDir{h: h, name: name, dir: h.Path(Dir, name)}
}

func (w *wsDir) path(elem ...string) string {
	return filepath.Join(append([]string{w.dir}, elem...)...)
}

func (w *wsDir) sockPath() string     { return w.path(runDir, supSockName) }
func (w *wsDir) supLog() string       { return w.path(logsDir, supLogName) }
func (w *wsDir) consoleLog() string   { return w.path(logsDir, consoleName) }
func (w *wsDir) diskPath() string     { return w.path(diskFile) }
func (w *wsDir) manifestPath() string { return w.path(manifestFile) }

// open finds an existing workspace by name.
func open(h home.Home, name string) (*wsDir, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	w := newWS(h, name)
	if _, err := os.Stat(w.manifestPath()); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notFound(name)
		}
		return nil, fmt.Errorf("workspace %s: %w", name, err)
	}
	return w, nil
}

func notFound(name string) error {
	return fmt.Errorf("%w %q: run \"microagent list\" to see the workspaces, or \"microagent create %s --image REF\"", ErrNotFound, name, name)
}

func randSuffix() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hidden reports entries of the workspaces folder that are not workspaces
// (creations in progress, deletions in progress).
func hidden(entry string) bool { return strings.HasPrefix(entry, hiddenPrefix) }

// writeFileAtomic replaces path with data (0600): temporary file, fsync,
// rename, fsync of the folder. A crash leaves the old or the new file.
func writeFileAtomic(path string, data []byte) error {
	return fsutil.WriteFileAtomic(path, data, filePerm)
}

func syncDir(dir string) error { return fsutil.SyncDir(dir) }
