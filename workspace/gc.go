package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/internal/proc"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
)

// GCReport says what GC repaired.
type GCReport struct {
	// Removed are leftover folders of interrupted creates and deletes.
	Removed []string `json:"removed"`
	// Repaired are workspaces whose recorded state was corrected (a dead
	// supervisor recorded as running, say) or whose stale runtime files
	// were removed.
	Repaired []string `json:"repaired"`
	// Killed are the PIDs of orphan processes (QEMU or supervisors that no
	// workspace owns) that were stopped.
	Killed []int `json:"killed"`
	// Skipped are workspaces another command held the lock of.
	Skipped []string `json:"skipped"`
}

// GC repairs the state directory after crashes: it removes the leftovers of
// interrupted creates and deletes, records the truth for workspaces whose
// supervisor died, stops orphan QEMU and supervisor processes, and removes
// stale sockets. Workspaces another command holds the lock of are skipped.
func GC(ctx context.Context, h home.Home) (*GCReport, error) {
	rep := &GCReport{Removed: []string{}, Repaired: []string{}, Killed: []int{}, Skipped: []string{}}
	base := h.Path(Dir)
	ents, err := os.ReadDir(base)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return rep, nil
		}
		return nil, fmt.Errorf("gc: %w", err)
	}
	procs := scanProcs(h)
	killAll := func(dir string, keep ...*proc.ID) {
		for _, p := range procs[dir] {
			if isKept(p, keep) {
				continue
			}
			if proc.KillAndWait(&p, 10*time.Second) == nil {
				rep.Killed = append(rep.Killed, p.PID)
			}
		}
	}
	for _, e := range ents {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		name := e.Name()
		dir := filepath.Join(base, name)
		if wsdir.Hidden(name) {
			if !strings.HasPrefix(name, wsdir.TmpPrefix) && !strings.HasPrefix(name, wsdir.TrashPrefix) {
				continue
			}
			l, err := wsdir.TryLock(filepath.Join(dir, wsdir.LockFile), name, "gc")
			if errors.Is(err, ErrBusy) {
				continue // a create or delete in progress
			}
			killAll(dir)
			if err := os.RemoveAll(dir); err != nil {
				l.Unlock()
				return rep, fmt.Errorf("gc: remove %s: %w", dir, err)
			}
			l.Unlock()
			rep.Removed = append(rep.Removed, name)
			continue
		}
		if ValidateName(name) != nil {
			continue
		}
		w := newWS(h, name)
		l, err := w.Lock("gc")
		if err != nil {
			if errors.Is(err, ErrBusy) {
				rep.Skipped = append(rep.Skipped, name)
			}
			continue
		}
		repaired, err := w.gc(procs[dir], rep)
		l.Unlock()
		if err != nil {
			return rep, err
		}
		if repaired {
			rep.Repaired = append(rep.Repaired, name)
		}
	}
	// Processes of workspaces that no longer exist.
	for dir := range procs {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			killAll(dir)
		}
	}
	return rep, nil
}

func isKept(p proc.ID, keep []*proc.ID) bool {
	for _, k := range keep {
		if k != nil && k.PID == p.PID && k.Start == p.Start {
			return true
		}
	}
	return false
}

// gc repairs one workspace; the caller holds its lock.
func (w *wsDir) gc(procs []proc.ID, rep *GCReport) (bool, error) {
	obs, err := w.observe()
	if err != nil {
		return false, err
	}
	repaired := false
	if obs.state.Live() {
		// Only processes of other boots are orphans.
		for _, p := range procs {
			if isKept(p, []*proc.ID{obs.rec.Supervisor, obs.rec.VMM}) || (obs.state == Starting && obs.rec.VMM == nil) {
				continue
			}
			if proc.KillAndWait(&p, 10*time.Second) == nil {
				rep.Killed = append(rep.Killed, p.PID)
				repaired = true
			}
		}
		return repaired, nil
	}
	for _, p := range procs {
		if proc.KillAndWait(&p, 10*time.Second) == nil {
			rep.Killed = append(rep.Killed, p.PID)
			repaired = true
		}
	}
	for _, p := range obs.orphans {
		if proc.KillAndWait(p, 10*time.Second) == nil {
			rep.Killed = append(rep.Killed, p.PID)
			repaired = true
		}
	}
	if obs.state != obs.rec.State {
		repaired = true
	}
	if ents, _ := os.ReadDir(w.Path(wsdir.RunDir)); len(ents) > 0 {
		repaired = true
	}
	// Temporary files of atomic writes a crash interrupted.
	if tmps, _ := filepath.Glob(filepath.Join(w.Path(), fsutil.TempPrefix+"*")); len(tmps) > 0 {
		for _, p := range tmps {
			os.Remove(p)
		}
		repaired = true
	}
	return repaired, w.settle()
}

// scanProcs finds the processes that belong to workspace folders under h,
// by their command lines: a VMM names the workspace's disk and logs (its
// backend recognises it, vmm.ProcessBackend), a supervisor its state
// directory and name (supervisor.ParseArgs). Other processes (a user's
// "tail -f" of a log) are never counted. The result is keyed by folder.
func scanProcs(h home.Home) map[string][]proc.ID {
	out := map[string][]proc.ID{}
	base := h.Path(Dir) + string(filepath.Separator)
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	me := os.Getpid()
	for _, p := range paths {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == me {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		// Only VMMs and supervisors: a user's "tail -f" of a log is no orphan.
		dir := ""
		if a, ok := supervisor.ParseArgs(args); ok {
			if a.StateDir == h.Root && wsdir.ValidateName(a.Name) == nil {
				dir = filepath.Join(h.Path(Dir), a.Name)
			}
		} else if _, ok := vmm.ProcessBackend(args, h.Path(Dir)); ok {
			dir = workspaceIn(args, base)
		}
		if dir == "" {
			continue
		}
		id, err := proc.Identify(pid)
		if err != nil {
			continue
		}
		out[dir] = append(out[dir], id)
	}
	return out
}

// workspaceIn is the workspace folder under base that an argument of a VMM's
// command line names a file of ("" for none).
func workspaceIn(args []string, base string) string {
	for _, a := range args {
		if j := strings.Index(a, base); j >= 0 {
			rest := a[j+len(base):]
			if k := strings.IndexAny(rest, "/,"); k > 0 {
				return base + rest[:k]
			}
		}
	}
	return ""
}
