package wsdir

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
	ManifestFile = "manifest.json"
	RecordFile   = "state.json"
	DiskFile     = "disk.ext4"
	LockFile     = "lock"
	recordLock   = "state.lock"
	RunDir       = "run"
	LogsDir      = "logs"
	supSockName  = "sup.sock"
	planFile     = "boot.json"
	supLogName   = "supervisor.log"
	consoleName  = "console.log"
	// PrevConsole keeps the previous boot's console log.
	PrevConsole = "console.prev.log"
	// TmpPrefix and TrashPrefix name hidden folders of creations and
	// deletions in progress (or interrupted: GC removes them).
	TmpPrefix    = ".tmp-"
	TrashPrefix  = ".trash-"
	hiddenPrefix = "."
	// FilePerm and DirPerm are the modes of every file and folder.
	FilePerm = 0o600
	DirPerm  = 0o700
)

// Dir is one workspace's folder.
type Dir struct {
	// Home is the state directory the workspace lives in.
	Home home.Home
	// Name is the workspace's name.
	Name string
	root string
}

// New names the folder of workspace name (which need not exist).
func New(h home.Home, name string) *Dir {
	return &Dir{Home: h, Name: name, root: h.Path(Workspaces, name)}
}

// At names a workspace folder at another place than its final one (a
// creation being assembled under a temporary name).
func At(h home.Home, name, root string) *Dir {
	return &Dir{Home: h, Name: name, root: root}
}

// Path joins elem to the workspace's folder; with none it is the folder.
func (w *Dir) Path(elem ...string) string {
	return filepath.Join(append([]string{w.root}, elem...)...)
}

// SockPath is the supervisor's socket.
func (w *Dir) SockPath() string { return w.Path(RunDir, supSockName) }

// SupLog is the supervisor's log, which spans boots.
func (w *Dir) SupLog() string { return w.Path(LogsDir, supLogName) }

// ConsoleLog is the guest's serial console of the current boot.
func (w *Dir) ConsoleLog() string { return w.Path(LogsDir, consoleName) }

// JobLog is the output of the supervisor's job name, which spans boots.
func (w *Dir) JobLog(name string) string { return w.Path(LogsDir, "job-"+name+".log") }

// DiskPath is the writable disk.
func (w *Dir) DiskPath() string { return w.Path(DiskFile) }

// ManifestPath is manifest.json.
func (w *Dir) ManifestPath() string { return w.Path(ManifestFile) }

// PlanPath is the boot plan of the current boot.
func (w *Dir) PlanPath() string { return w.Path(RunDir, planFile) }

// Open finds an existing workspace by name.
func Open(h home.Home, name string) (*Dir, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	w := New(h, name)
	if _, err := os.Stat(w.ManifestPath()); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, NotFound(name)
		}
		return nil, &Error{Name: name, Err: err}
	}
	return w, nil
}

// NotFound is the error for a workspace name that names none.
func NotFound(name string) error {
	return fmt.Errorf("%w %q: run \"microagent list\" to see the workspaces, or \"microagent create %s --image REF\"", ErrNotFound, name, name)
}

// RandSuffix is a random suffix for temporary and trash names.
func RandSuffix() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Hidden reports entries of the workspaces folder that are not workspaces
// (creations in progress, deletions in progress).
func Hidden(entry string) bool { return strings.HasPrefix(entry, hiddenPrefix) }

// WriteFileAtomic replaces path with data (0600): temporary file, fsync,
// rename, fsync of the folder. A crash leaves the old or the new file.
func WriteFileAtomic(path string, data []byte) error {
	return fsutil.WriteFileAtomic(path, data, FilePerm)
}

// CleanRuntime removes the runtime files of a boot that is over (stale
// sockets, the boot plan).
func (w *Dir) CleanRuntime() error {
	dir := w.Path(RunDir)
	if err := os.RemoveAll(dir); err != nil {
		return &Error{Name: w.Name, Op: "clean runtime folder", Err: err}
	}
	return os.Mkdir(dir, DirPerm)
}
