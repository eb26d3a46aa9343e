package workspace

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// ParseSnapshotRef reads "WORKSPACE:TAG".
func ParseSnapshotRef(ref string) (ws, tag string, err error) {
	ws, tag, ok := strings.Cut(ref, ":")
	if !ok || ws == "" || tag == "" {
		return "", "", fmt.Errorf("%w: snapshot %q: use WORKSPACE:TAG, e.g. builder:baseline", ErrInvalidTag, ref)
	}
	if err := ValidateName(ws); err != nil {
		return "", "", err
	}
	if err := ValidateTag(tag); err != nil {
		return "", "", err
	}
	return ws, tag, nil
}

// ForkOptions say which snapshot to fork into which new workspace.
type ForkOptions struct {
	// Name is the new workspace's name.
	Name string
	// Source and Tag name the snapshot.
	Source, Tag string
	// CreatedBy marks who created the fork (Manifest.CreatedBy): the fork
	// is the forker's, not the source's creator's.
	CreatedBy string
}

// Fork creates a new workspace from a snapshot of another: same image,
// resources and declarations, its own copy of the snapshot's disk, and the
// snapshot's saved machine, which its first Start resumes (mapping the
// saved RAM copy-on-write, so the time does not grow with the RAM size)
// with a new identity: its own name as hostname, a new machine id, fresh
// entropy, and secrets resolved at that start. The source is not changed.
func Fork(ctx context.Context, h home.Home, o ForkOptions) (*Info, error) {
	if err := ValidateName(o.Name); err != nil {
		return nil, err
	}
	if err := wsdir.CheckSocketPaths(h, o.Name); err != nil {
		return nil, err
	}
	src, err := open(h, o.Source)
	if err != nil {
		return nil, err
	}
	snap, err := src.ReadSnapshot(o.Tag)
	if err != nil {
		return nil, err
	}
	final := h.Path(Dir, o.Name)
	if _, err := os.Lstat(final); err == nil {
		return nil, existsError(o.Name)
	}
	sm, err := src.ReadManifest()
	if err != nil {
		return nil, err
	}
	err = assemble(h, o.Name, func(w *wsDir) error {
		if err := os.Mkdir(w.Path(wsdir.RestoreDir), wsdir.DirPerm); err != nil {
			return &wsdir.Error{Name: o.Name, Err: err}
		}
		// The snapshot's files are linked first, not copied: they never
		// change, and a link outlives the snapshot's deletion, so no lock on
		// the source is needed and forks of one snapshot run side by side.
		sdir := src.SnapDir(o.Tag)
		for _, f := range []string{wsdir.SnapState, wsdir.SnapMemory, wsdir.SnapMeta, wsdir.SnapDisk} {
			err := os.Link(filepath.Join(sdir, f), w.Path(wsdir.RestoreDir, f))
			if errors.Is(err, os.ErrNotExist) && f == wsdir.SnapMemory && !snap.SharedRAM {
				continue // the RAM is in the state stream
			}
			if err != nil {
				return fmt.Errorf("workspace %s: snapshot %s:%s (deleted meanwhile?): %w", o.Name, o.Source, o.Tag, err)
			}
		}
		linked := w.Path(wsdir.RestoreDir, wsdir.SnapDisk)
		fi, err := os.Stat(linked)
		if err != nil {
			return &wsdir.Error{Name: o.Name, Err: err}
		}
		if err := fsutil.CopySparseFile(ctx, linked, w.DiskPath(), fi.Size(), nil); err != nil {
			return &wsdir.Error{Name: o.Name, Op: "copy the snapshot's disk", Err: err}
		}
		if err := os.Remove(linked); err != nil {
			return &wsdir.Error{Name: o.Name, Err: err}
		}
		sec, err := sm.Secrets()
		if err != nil {
			return err
		}
		if err := w.CopyEgressCA(src.Dir); err != nil {
			return err
		}
		if sec.Audit {
			// The fork's accesses are its own: a new, empty log.
			if err := createAuditLog(w.Path(audit.FileName)); err != nil {
				return &wsdir.Error{Name: o.Name, Err: err}
			}
		}
		m := *sm
		m.Name, m.Created, m.CreatedBy = o.Name, time.Now().UTC(), o.CreatedBy
		// The source may be running with its ports published: the fork keeps
		// the network's mode and settings but publishes nothing.
		m.Declarations = maps.Clone(sm.Declarations)
		if nc, err := sm.Network(); err == nil && len(nc.Publish) > 0 {
			nc.Publish = nil
			if err := m.SetNetwork(nc); err != nil {
				return err
			}
		}
		return wsdir.WriteManifest(w.ManifestPath(), &m)
	})
	if err != nil {
		return nil, err
	}
	return newWS(h, o.Name).info(ctx, false)
}

// kernelID names a kernel by its vmlinux's SHA-256.
func kernelID(sha256 string) string { return "sha256:" + sha256 }

// restoreFor plans the resumption of a saved machine at a start: the
// snapshot named by fromSnapshot (an in-place restore), or a fork's first
// start. It refuses a snapshot this start could not resume safely, before
// anything changes.
func (w *wsDir) restoreFor(fromSnapshot string, m *Manifest, kernel, initrd string) (*supervisor.RestorePlan, error) {
	var snap *Snapshot
	var r *supervisor.RestorePlan
	var err error
	switch {
	case fromSnapshot != "":
		if snap, err = w.ReadSnapshot(fromSnapshot); err != nil {
			return nil, err
		}
		r = &supervisor.RestorePlan{Dir: w.SnapDir(fromSnapshot), SharedRAM: snap.SharedRAM, Tag: snap.Tag, Source: w.Name}
	default:
		if _, serr := os.Stat(w.Path(wsdir.RestoreDir, wsdir.SnapMeta)); serr != nil {
			return nil, nil // an ordinary boot
		}
		if snap, err = wsdir.ReadSnapshotFile(w.Path(wsdir.RestoreDir, wsdir.SnapMeta)); err != nil {
			return nil, &wsdir.Error{Name: w.Name, Op: "the snapshot it was forked from", Err: err}
		}
		r = &supervisor.RestorePlan{Dir: w.Path(wsdir.RestoreDir), SharedRAM: snap.SharedRAM, Fork: true, Tag: snap.Tag, Source: snap.Workspace}
	}
	var diffs []string
	check := func(what, was, now string) {
		if was != now {
			diffs = append(diffs, fmt.Sprintf("%s %s, now %s", what, was, now))
		}
	}
	check("memory (MiB)", fmt.Sprint(snap.MemoryMiB), fmt.Sprint(m.Resources.MemoryMiB))
	check("CPUs", fmt.Sprint(snap.CPUs), fmt.Sprint(m.Resources.CPUs))
	check("kernel", snap.Kernel, kernel)
	check("guest agent and modules (initramfs)", snap.Initrd, initrd)
	now, err := machineIdentity(m)
	if err != nil {
		return nil, &wsdir.Error{Name: w.Name, Err: err}
	}
	was := snap.Identity()
	if was.Backend == "" {
		was.Backend = now.Backend // taken before backends were recorded, when there was one
	}
	diffs = append(diffs, was.Diff(now)...)
	if len(diffs) > 0 {
		return nil, fmt.Errorf("workspace %s: snapshot %s:%s cannot be resumed by this machine: it was taken with %s: start without the snapshot, or take a new one",
			w.Name, r.Source, r.Tag, strings.Join(diffs, "; "))
	}
	return r, nil
}

// machineIdentity is the identity the workspace's machine would have if
// started now (see vmm.Identity).
func machineIdentity(m *Manifest) (vmm.Identity, error) {
	backend, err := backendOf(m)
	if err != nil {
		return vmm.Identity{}, err
	}
	nc, err := m.Network()
	if err != nil {
		return vmm.Identity{}, err
	}
	n := nc.VMM()
	return microvm.Identity(microvm.Options{Backend: backend, Network: &n})
}

// backendOf is the VMM backend a workspace runs on.
func backendOf(m *Manifest) (vmm.Backend, error) {
	if m.Backend == "" {
		return vmm.Default()
	}
	return vmm.Lookup(m.Backend)
}

// rollBackDisk replaces the writable disk with a copy of a snapshot's (a
// copy made beside it, then renamed over it: a crash leaves one or the
// other).
func (w *wsDir) rollBackDisk(ctx context.Context, snapDir string) error {
	src := filepath.Join(snapDir, wsdir.SnapDisk)
	fi, err := os.Stat(src)
	if err != nil {
		return &wsdir.Error{Name: w.Name, Op: "the snapshot's disk", Err: err}
	}
	tmp := w.Path(wsdir.TmpPrefix + wsdir.DiskFile + "-" + wsdir.RandSuffix())
	if err := fsutil.CopySparseFile(ctx, src, tmp, fi.Size(), nil); err != nil {
		os.Remove(tmp)
		return &wsdir.Error{Name: w.Name, Op: "copy the snapshot's disk", Err: err}
	}
	if err := os.Rename(tmp, w.DiskPath()); err != nil {
		os.Remove(tmp)
		return &wsdir.Error{Name: w.Name, Op: "roll back the disk", Err: err}
	}
	return fsutil.SyncDir(w.Path())
}
