package wsdir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/vmm"
)

// A snapshot is a folder snapshots/<tag>/ in the workspace folder holding
// the machine's device state, its RAM (when the RAM was shared) and its
// writable disk, all taken at one paused moment, plus snapshot.json. It is
// assembled in a hidden temporary folder and renamed into place last, so a
// crash never leaves a half snapshot that List shows.
const (
	SnapshotsDir  = "snapshots"
	SnapMeta      = "snapshot.json"
	SnapState     = "state"
	SnapMemory    = "memory"
	SnapDisk      = "disk.ext4"
	RestoreDir    = "restore" // a fork's saved state, until its first boot
	snapshotVer   = 1
	maxTagLen     = 64
	TagTimeLayout = "20060102-150405"
)

var tagRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// ErrSnapshotNotFound: no snapshot has the tag.
var ErrSnapshotNotFound = errors.New("snapshot not found")

// ErrInvalidTag: a snapshot tag breaks the naming rules.
var ErrInvalidTag = errors.New("invalid snapshot tag")

// ValidateTag checks a snapshot tag: 1-64 characters of letters, digits,
// '_', '.' and '-', starting with a letter or digit (so no path tricks and
// no hidden files).
func ValidateTag(tag string) error {
	if len(tag) > maxTagLen || !tagRE.MatchString(tag) || strings.Contains(tag, "..") {
		return fmt.Errorf("%w %q: use 1-%d characters of letters, digits, '_', '.' and '-', starting with a letter or digit", ErrInvalidTag, tag, maxTagLen)
	}
	return nil
}

// Snapshot describes a saved moment of a workspace: what it needs to be
// restored safely, and what it holds.
type Snapshot struct {
	Version   int       `json:"version"`
	Tag       string    `json:"tag"`
	Workspace string    `json:"workspace"`
	Created   time.Time `json:"created"`
	Image     ImageRef  `json:"image"`
	// The machine the state belongs to: a restore must boot the same.
	MemoryMiB int    `json:"memoryMiB"`
	CPUs      int    `json:"cpus"`
	Kernel    string `json:"kernel"` // "sha256:" + the vmlinux's hash
	Initrd    string `json:"initrd"`
	// Backend names the VMM backend (vmm.Identity); empty in snapshots
	// taken before backends were recorded, when there was only one.
	Backend string `json:"backend,omitempty"`
	Accel   string `json:"accel"`
	// CPU is the guest CPU model: QEMU's "max" under TCG; under KVM the
	// host's own CPU, which another host may not offer.
	CPU     string `json:"cpu"`
	Devices string `json:"devices"`
	// SharedRAM: the RAM is in the memory file, not in the state stream.
	SharedRAM bool `json:"sharedRAM"`
	// Paused says the workspace was paused when captured.
	Paused bool `json:"paused,omitempty"`
	// SizeBytes is the space the snapshot's files use.
	SizeBytes int64 `json:"sizeBytes"`
	// SecretsPurged lists the materialized secrets the guest confirmed it
	// scrubbed before the capture.
	SecretsPurged []string `json:"secretsPurged,omitempty"`
	// Scan says what the leak scan covered.
	Scan string `json:"scan,omitempty"`
}

// Identity is the identity of the machine the snapshot was taken of.
func (s *Snapshot) Identity() vmm.Identity {
	return vmm.Identity{Backend: s.Backend, Accel: s.Accel, CPU: s.CPU, Devices: s.Devices}
}

// SetIdentity records the identity of the machine being captured.
func (s *Snapshot) SetIdentity(id vmm.Identity) {
	s.Backend, s.Accel, s.CPU, s.Devices = id.Backend, id.Accel, id.CPU, id.Devices
}

// SnapDir is the folder of snapshot tag.
func (w *Dir) SnapDir(tag string) string { return w.Path(SnapshotsDir, tag) }

// ReadSnapshot loads a snapshot's description.
func (w *Dir) ReadSnapshot(tag string) (*Snapshot, error) {
	if err := ValidateTag(tag); err != nil {
		return nil, err
	}
	s, err := ReadSnapshotFile(filepath.Join(w.SnapDir(tag), SnapMeta))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: workspace %s has no snapshot %q: run \"microagent snapshot list %s\"", ErrSnapshotNotFound, w.Name, tag, w.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("workspace %s: snapshot %s: %w", w.Name, tag, err)
	}
	return s, nil
}

// ReadSnapshotFile loads a snapshot.json.
func ReadSnapshotFile(path string) (*Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("corrupt (%v): delete it", err)
	}
	if s.Version > snapshotVer {
		return nil, fmt.Errorf("written by a newer microagent (version %d)", s.Version)
	}
	return &s, nil
}

// RemoveSnapshotDir moves a snapshot folder aside (one rename, so it
// vanishes from List at once) and removes it.
func (w *Dir) RemoveSnapshotDir(dir string) error {
	trash := filepath.Join(filepath.Dir(dir), TrashPrefix+filepath.Base(dir)+"-"+RandSuffix())
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("workspace %s: delete snapshot %s: %w", w.Name, filepath.Base(dir), err)
	}
	return os.RemoveAll(trash)
}

// CleanSnapshotLeftovers removes temporary and trash folders that killed
// captures or deletes left behind. The caller makes sure no capture runs
// (Start, before the supervisor exists; the supervisor, under ctl).
func (w *Dir) CleanSnapshotLeftovers() {
	ents, _ := os.ReadDir(w.Path(SnapshotsDir))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), TmpPrefix) || strings.HasPrefix(e.Name(), TrashPrefix) {
			os.RemoveAll(w.Path(SnapshotsDir, e.Name()))
		}
	}
}

// DirSize is the space a folder's files use.
func DirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			var st syscall.Stat_t
			if syscall.Stat(p, &st) == nil {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// WriteSnapshotMeta writes snapshot.json into dir.
func WriteSnapshotMeta(dir string, s *Snapshot) error {
	s.Version = snapshotVer
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, SnapMeta), append(b, '\n'))
}
