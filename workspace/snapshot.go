package workspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/wsdir"
)

// ListSnapshots returns a workspace's snapshots, oldest first. Folders of
// captures that never finished are not shown.
func ListSnapshots(h home.Home, name string) ([]*Snapshot, error) {
	w, err := open(h, name)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(w.Path(wsdir.SnapshotsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("workspace %s: snapshots: %w", name, err)
	}
	var out []*Snapshot
	for _, e := range ents {
		if !e.IsDir() || wsdir.Hidden(e.Name()) {
			continue
		}
		s, err := w.ReadSnapshot(e.Name())
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
	if _, err := w.ReadSnapshot(tag); err != nil {
		return err
	}
	l, err := w.Lock("snapshot delete")
	if err != nil {
		return err
	}
	defer l.Unlock()
	return w.RemoveSnapshotDir(w.SnapDir(tag))
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
		o.Tag = time.Now().UTC().Format(wsdir.TagTimeLayout)
	}
	if err := ValidateTag(o.Tag); err != nil {
		return nil, err
	}
	if _, err := os.Stat(w.SnapDir(o.Tag)); err == nil {
		return nil, fmt.Errorf("workspace %s already has a snapshot %q: pick another tag or delete it (\"microagent snapshot delete %s %s\")", w.Name, o.Tag, w.Name, o.Tag)
	}
	l, err := w.Lock("snapshot")
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	if err := w.needLive(ctx, "snapshot"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(w.Path(wsdir.SnapshotsDir), wsdir.DirPerm); err != nil {
		return nil, fmt.Errorf("workspace %s: %w", w.Name, err)
	}
	data, err := w.control(ctx, supRequest{Op: opSnapshot, Tag: o.Tag})
	if err != nil {
		return nil, err
	}
	var s Snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("workspace %s: snapshot reply: %w", w.Name, err)
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
	l, err := w.Lock(op)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
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
		return fmt.Errorf("workspace %s is %s (%w): try again when it has finished", w.Name, obs.state, ErrBusy)
	}
	return fmt.Errorf("%w: cannot %s %s: it is %s; start it first (\"microagent start %s\")", ErrNotRunning, op, w.Name, obs.state, w.Name)
}

// control sends a control request to the supervisor and returns its data.
func (w *wsDir) control(ctx context.Context, req supRequest) ([]byte, error) {
	conn, r, err := w.supCall(ctx, req)
	if err != nil {
		if supNotListening(err) {
			return nil, fmt.Errorf("%w: %s has no supervisor listening (it just stopped?)", ErrNotRunning, w.Name)
		}
		return nil, fmt.Errorf("workspace %s: %s: %w", w.Name, req.Op, err)
	}
	conn.Close()
	if r.Error != "" {
		return nil, fmt.Errorf("workspace %s: %s: %s", w.Name, req.Op, r.Error)
	}
	return r.Data, nil
}
