package workspace

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/supervisor"
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
		return nil, &wsdir.Error{Name: name, Op: "snapshots", Err: err}
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
		return nil, &wsdir.Error{Name: w.Name, Err: err}
	}
	var snap *Snapshot
	err = w.control("snapshot", func(c *supervisor.Client) (err error) {
		snap, err = c.Snapshot(ctx, o.Tag)
		return err
	})
	return snap, err
}

// Pause stops a running workspace's virtual CPUs; its memory stays where
// it is (no purge is needed: nothing is written). Pausing a paused
// workspace is not an error.
func Pause(ctx context.Context, h home.Home, name string) (*Info, error) {
	return pauseResume(ctx, h, name, "pause", (*supervisor.Client).Pause)
}

// Resume runs a paused workspace again; the guest clock is set and its
// entropy reseeded, and secrets purged by a snapshot are restored.
func Resume(ctx context.Context, h home.Home, name string) (*Info, error) {
	return pauseResume(ctx, h, name, "resume", (*supervisor.Client).Resume)
}

func pauseResume(ctx context.Context, h home.Home, name, op string, call func(*supervisor.Client, context.Context) error) (*Info, error) {
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
	if err := w.control(op, func(c *supervisor.Client) error { return call(c, ctx) }); err != nil {
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

// control runs a control request (op) through the supervisor.
func (w *wsDir) control(op string, call func(*supervisor.Client) error) error {
	err := call(supervisor.NewClient(w.Dir))
	var refused *supervisor.RemoteError
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &refused) && supervisor.NotListening(err):
		return fmt.Errorf("%w: %s has no supervisor listening (it just stopped?)", ErrNotRunning, w.Name)
	}
	return fmt.Errorf("workspace %s: %s: %w", w.Name, op, err)
}
