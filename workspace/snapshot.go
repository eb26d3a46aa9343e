package workspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/home"
)

// A snapshot is a folder snapshots/<tag>/ in the workspace folder holding
// the machine's device state, its RAM (when the RAM was shared) and its
// writable disk, all taken at one paused moment, plus snapshot.json. It is
// assembled in a hidden temporary folder and renamed into place last, so a
// crash never leaves a half snapshot that List shows.
const (
	snapshotsDir  = "snapshots"
	snapMeta      = "snapshot.json"
	snapState     = "state"
	snapMemory    = "memory"
	snapDisk      = "disk.ext4"
	restoreDir    = "restore" // a fork's saved state, until its first boot
	snapshotVer   = 1
	maxTagLen     = 64
	tagTimeLayout = "20060102-150405"
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
	Accel     string `json:"accel"`
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

func (w *wsDir) snapDir(tag string) string { return w.path(snapshotsDir, tag) }

// readSnapshot loads a snapshot's description.
func (w *wsDir) readSnapshot(tag string) (*Snapshot, error) {
	if err := ValidateTag(tag); err != nil {
		return nil, err
	}
	s, err := readSnapshotFile(filepath.Join(w.snapDir(tag), snapMeta))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: workspace %s has no snapshot %q: run \"microagent snapshot list %s\"", ErrSnapshotNotFound, w.name, tag, w.name)
	}
	if err != nil {
		return nil, fmt.Errorf("workspace %s: snapshot %s: %w", w.name, tag, err)
	}
	return s, nil
}

// readSnapshotFile loads a snapshot.json.
func readSnapshotFile(path string) (*Snapshot, error) {
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

// ListSnapshots returns a workspace's snapshots, oldest first. Folders of
// captures that never finished are not shown.
func ListSnapshots(h home.Home, name string) ([]*Snapshot, error) {
	w, err := open(h, name)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(w.path(snapshotsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("workspace %s: snapshots: %w", name, err)
	}
	var out []*Snapshot
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), hiddenPrefix) {
			continue
		}
		s, err := w.readSnapshot(e.Name())
		if err != nil {
			continue // not a snapshot (or half-deleted): not listed
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// DeleteSnapshot removes one snapshot. Forks resumed from it keep running:
// they hold their own link to its RAM file.
func DeleteSnapshot(h home.Home, name, tag string) error {
	w, err := open(h, name)
	if err != nil {
		return err
	}
	if _, err := w.readSnapshot(tag); err != nil {
		return err
	}
	l, err := w.lock("snapshot delete")
	if err != nil {
		return err
	}
	defer l.unlock()
	return w.removeSnapshotDir(w.snapDir(tag))
}

// removeSnapshotDir moves a snapshot folder aside (one rename, so it
// vanishes from List at once) and removes it.
func (w *wsDir) removeSnapshotDir(dir string) error {
	trash := filepath.Join(filepath.Dir(dir), trashPrefix+filepath.Base(dir)+"-"+randSuffix())
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("workspace %s: delete snapshot %s: %w", w.name, filepath.Base(dir), err)
	}
	return os.RemoveAll(trash)
}

// cleanSnapshotLeftovers removes temporary and trash folders that killed
// captures or deletes left behind. The caller makes sure no capture runs
// (Start, before the supervisor exists; the supervisor, under ctl).
func (w *wsDir) cleanSnapshotLeftovers() {
	ents, _ := os.ReadDir(w.path(snapshotsDir))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) || strings.HasPrefix(e.Name(), trashPrefix) {
			os.RemoveAll(w.path(snapshotsDir, e.Name()))
		}
	}
}

// SnapshotOptions say how to capture a snapshot.
type SnapshotOptions struct {
	Name string
	// Tag names the snapshot (default: the UTC time, 20060102-150405).
	Tag string
}

// CreateSnapshot captures a running or paused workspace: the guest purges
// its materialized secrets (and must confirm), is paused, and its device
// state, RAM and writable disk are saved; a running workspace then resumes
// and gets its secrets back; a paused one stays paused. A halted workspace
// is refused (there is no moment to capture: start it first).
func CreateSnapshot(ctx context.Context, h home.Home, o SnapshotOptions) (*Snapshot, error) {
	w, err := open(h, o.Name)
	if err != nil {
		return nil, err
	}
	if o.Tag == "" {
		o.Tag = time.Now().UTC().Format(tagTimeLayout)
	}
	if err := ValidateTag(o.Tag); err != nil {
		return nil, err
	}
	if _, err := os.Stat(w.snapDir(o.Tag)); err == nil {
		return nil, fmt.Errorf("workspace %s already has a snapshot %q: pick another tag or delete it (\"microagent snapshot delete %s %s\")", w.name, o.Tag, w.name, o.Tag)
	}
	l, err := w.lock("snapshot")
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	if err := w.needLive(ctx, "snapshot"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(w.path(snapshotsDir), dirPerm); err != nil {
		return nil, fmt.Errorf("workspace %s: %w", w.name, err)
	}
	data, err := w.control(ctx, supRequest{Op: opSnapshot, Tag: o.Tag})
	if err != nil {
		return nil, err
	}
	var s Snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("workspace %s: snapshot reply: %w", w.name, err)
	}
	return &s, nil
}

// Pause stops a running workspace's virtual CPUs; its memory stays where
// it is (no purge is needed: nothing is written). Pausing a paused
// workspace is not an error.
func Pause(ctx context.Context, h home.Home, name string) (*Info, error) {
	return pauseResume(ctx, h, name, opPause)
}

// Resume runs a paused workspace again; the guest clock is set and its
// entropy reseeded, and secrets purged by a snapshot are restored.
func Resume(ctx context.Context, h home.Home, name string) (*Info, error) {
	return pauseResume(ctx, h, name, opResume)
}

func pauseResume(ctx context.Context, h home.Home, name, op string) (*Info, error) {
	w, err := open(h, name)
	if err != nil {
		return nil, err
	}
	l, err := w.lock(op)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	if err := w.needLive(ctx, op); err != nil {
		return nil, err
	}
	if _, err := w.control(ctx, supRequest{Op: op}); err != nil {
		return nil, err
	}
	return w.info(ctx, false)
}

// needLive refuses an operation that needs a running (or paused)
// workspace.
func (w *wsDir) needLive(ctx context.Context, op string) error {
	obs, err := w.observe()
	if err != nil {
		return err
	}
	switch obs.state {
	case Running:
		return nil
	case Starting, Halting:
		return fmt.Errorf("workspace %s is %s (%w): try again when it has finished", w.name, obs.state, ErrBusy)
	}
	return fmt.Errorf("%w: cannot %s %s: it is %s; start it first (\"microagent start %s\")", ErrNotRunning, op, w.name, obs.state, w.name)
}

// control sends a control request to the supervisor and returns its data.
func (w *wsDir) control(ctx context.Context, req supRequest) ([]byte, error) {
	conn, r, err := w.supCall(ctx, req)
	if err != nil {
		if supNotListening(err) {
			return nil, fmt.Errorf("%w: %s has no supervisor listening (it just stopped?)", ErrNotRunning, w.name)
		}
		return nil, fmt.Errorf("workspace %s: %s: %w", w.name, req.Op, err)
	}
	conn.Close()
	if r.Error != "" {
		return nil, fmt.Errorf("workspace %s: %s: %s", w.name, req.Op, r.Error)
	}
	return r.Data, nil
}

// dirSize is the space a folder's files use.
func dirSize(dir string) int64 {
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

// writeSnapshotMeta writes snapshot.json into dir.
func writeSnapshotMeta(dir string, s *Snapshot) error {
	s.Version = snapshotVer
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, snapMeta), append(b, '\n'))
}
