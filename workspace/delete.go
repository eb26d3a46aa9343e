package workspace

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/wsdir"
)

// DeleteOptions say what to delete.
type DeleteOptions struct {
	Name string
	// Force kills a live workspace first; without it deleting a live
	// workspace fails with ErrRunning.
	Force bool
}

// Delete removes a workspace and its disk. The folder is first renamed
// away in one step, so the workspace disappears at once and a crash midway
// leaves only a hidden folder that GC removes.
func Delete(ctx context.Context, h home.Home, o DeleteOptions) error {
	w, err := open(h, o.Name)
	if err != nil {
		return err
	}
	l, err := w.Lock("delete")
	if err != nil {
		return err
	}
	defer l.Unlock()
	obs, err := w.observe()
	if err != nil {
		return err
	}
	if obs.state.Live() {
		if !o.Force {
			return liveError(w.Name, obs, "delete")
		}
		if obs.state == Running {
			w.requestStop(ctx, obs, supervisor.OpKill, 5*time.Second)
		}
		w.force(obs.rec, "deleted")
		if obs, err = w.observe(); err != nil {
			return err
		}
	}
	if err := w.stopOrphans(obs); err != nil {
		return err
	}
	base := h.Path(Dir)
	trash := filepath.Join(base, wsdir.TrashPrefix+w.Name+"-"+wsdir.RandSuffix())
	if err := os.Rename(w.Path(), trash); err != nil {
		return &wsdir.Error{Name: w.Name, Op: "delete", Err: err}
	}
	fsutil.SyncDir(base)
	l.Unlock()
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("workspace %s: deleted, but removing its files failed (run \"microagent gc\"): %w", w.Name, err)
	}
	return nil
}
