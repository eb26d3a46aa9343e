package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// snapshotTimeout bounds one capture (purge, device state, RAM and disk
// copies) in the supervisor.
const snapshotTimeout = 10 * time.Minute

// snapshot captures the machine into snapshots/<tag>.
func (s *supervisor) snapshot(ctx context.Context, tag string) (snap *wsdir.Snapshot, err error) {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if err := wsdir.ValidateTag(tag); err != nil {
		return nil, err
	}
	final := s.w.SnapDir(tag)
	if _, err := os.Stat(final); err == nil {
		return nil, fmt.Errorf("a snapshot %q exists already", tag)
	}
	sn, err := s.snapshotter()
	if err != nil {
		return nil, err
	}
	if err := s.checkSpace(); err != nil {
		return nil, err
	}
	start := time.Now()
	wasPaused := s.isPaused()
	snap = &wsdir.Snapshot{
		Tag: tag, Workspace: s.w.Name, Created: start.UTC(), Image: s.manifest.Image,
		MemoryMiB: s.plan.MemoryMiB, CPUs: s.plan.CPUs, Kernel: s.plan.KernelID, Initrd: s.plan.Initrd,
		SharedRAM: s.mem.shared, Paused: wasPaused,
	}
	if r, ok := s.vm.Machine.(vmm.IdentityReporter); ok {
		snap.SetIdentity(r.Identity())
	}

	// Secrets first: no memory may be written while the guest holds them.
	if s.sec.materializes() && !s.purged {
		if wasPaused {
			if err := sn.Resume(ctx); err != nil {
				return nil, err
			}
		}
		names, err := s.vm.Client.Purge(ctx)
		if err != nil {
			if wasPaused {
				sn.Pause(ctx)
			}
			return nil, fmt.Errorf("the guest could not confirm that it purged /run/secrets (%v): snapshot aborted, nothing written", err)
		}
		s.purged = true
		if err := s.sec.checkPurged(names); err != nil {
			// It did purge (or says so): give the secrets back first.
			err = fmt.Errorf("%w: snapshot refused, nothing written", err)
			if rerr := s.rehydrate(ctx); rerr != nil {
				err = fmt.Errorf("%w; and then: %w", err, rerr)
			}
			if wasPaused {
				sn.Pause(ctx)
			}
			return nil, err
		}
		snap.SecretsPurged = names
		s.sec.recordPurge(names)
		if wasPaused {
			if err := sn.Pause(ctx); err != nil {
				return nil, err
			}
		}
	}
	if !s.isPaused() {
		if err := sn.Pause(ctx); err != nil {
			return nil, err
		}
		s.setPaused(true)
	}
	defer func() {
		if wasPaused {
			return // stays paused; a resume gives the secrets back
		}
		if rerr := s.resumeLocked(context.WithoutCancel(ctx)); rerr != nil {
			if err == nil {
				err = fmt.Errorf("snapshot %s saved, but: %w", tag, rerr)
			}
		}
	}()

	// Under ctl no other capture runs: what is left is from a killed one.
	s.w.CleanSnapshotLeftovers()
	tmp, err := os.MkdirTemp(s.w.Path(wsdir.SnapshotsDir), wsdir.TmpPrefix+tag+"-")
	if err != nil {
		return nil, fmt.Errorf("snapshot folder: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed into place
	statePath := filepath.Join(tmp, wsdir.SnapState)
	if err := sn.SaveState(ctx, statePath); err != nil {
		return nil, err
	}
	// The VMM writes the file with its own umask (QEMU's: 0644); like
	// every file of a workspace it is the user's alone.
	if err := os.Chmod(statePath, wsdir.FilePerm); err != nil {
		return nil, fmt.Errorf("snapshot device state: %w", err)
	}
	paused := time.Since(start)
	scan := newLeakCheck(s.sec.sent())
	if s.mem.shared {
		// Through a visitor even with nothing to scan: the visited copy
		// leaves zero pages as holes, and most of a guest's RAM is zeros.
		visit := scan.visit("memory")
		if visit == nil {
			visit = func(int64, []byte) error { return nil }
		}
		if err := fsutil.CopySparseFrom(ctx, s.mem.file, filepath.Join(tmp, wsdir.SnapMemory), int64(s.plan.MemoryMiB)<<20, visit); err != nil {
			return nil, fmt.Errorf("save the RAM: %w", err)
		}
	}
	if err := s.copyDisk(ctx, filepath.Join(tmp, wsdir.SnapDisk), scan.visit("disk")); err != nil {
		return nil, err
	}
	if err := scan.check(); err != nil {
		return nil, err
	}
	snap.Scan = scan.summary()
	snap.SizeBytes = wsdir.DirSize(tmp)
	if err := wsdir.WriteSnapshotMeta(tmp, snap); err != nil {
		return nil, err
	}
	if err := fsutil.RenameNoReplace(tmp, final); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", tag, err)
	}
	fsutil.SyncDir(filepath.Dir(final))
	s.log.Printf("snapshot %s: %d MiB on disk in %s (device state after %s)", tag, snap.SizeBytes>>20,
		time.Since(start).Round(time.Millisecond), paused.Round(time.Millisecond))
	return snap, nil
}

// spaceMargin is kept free beyond a snapshot's estimated size.
const spaceMargin = 64 << 20

// checkSpace refuses a capture that would not fit, before anything is
// paused, purged or written: the snapshot needs about the RAM the guest
// has touched plus the disk's allocated blocks.
func (s *supervisor) checkSpace() error {
	var need int64
	var st unix.Stat_t
	if s.mem.shared && unix.Fstat(int(s.mem.file.Fd()), &st) == nil {
		need += st.Blocks * 512
	}
	if unix.Stat(s.w.DiskPath(), &st) == nil {
		need += st.Blocks * 512
	}
	var fs unix.Statfs_t
	dir := s.w.Path(wsdir.SnapshotsDir)
	if err := unix.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("snapshot folder %s: %w", dir, err)
	}
	if free := int64(fs.Bavail) * fs.Bsize; free < need+spaceMargin {
		return fmt.Errorf("not enough free space for the snapshot in %s: it needs about %d MiB, %d MiB are free; free some space or delete old snapshots (\"microagent snapshot delete\")",
			dir, (need+spaceMargin)>>20, free>>20)
	}
	return nil
}

// copyDisk copies the writable disk; QEMU flushed it when it saved the
// device state, and the guest is paused.
func (s *supervisor) copyDisk(ctx context.Context, dst string, visit fsutil.VisitFunc) error {
	fi, err := os.Stat(s.w.DiskPath())
	if err != nil {
		return fmt.Errorf("save the disk: %w", err)
	}
	if err := fsutil.CopySparseFile(ctx, s.w.DiskPath(), dst, fi.Size(), visit); err != nil {
		return fmt.Errorf("save the disk: %w", err)
	}
	return nil
}

// handleControl serves pause, resume and snapshot requests.
func (s *supervisor) handleControl(req Request) ([]byte, error) {
	s.mu.Lock()
	phase := s.phase
	s.mu.Unlock()
	if phase != wsdir.Running {
		return nil, fmt.Errorf("workspace %s is %s", s.w.Name, phase)
	}
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	switch req.Op {
	case OpPause:
		return nil, s.pause(ctx)
	case OpResume:
		return nil, s.resume(ctx)
	case OpSnapshot:
		snap, err := s.snapshot(ctx, req.Tag)
		if err != nil {
			s.log.Printf("snapshot %s failed: %v", req.Tag, err)
			return nil, err
		}
		return json.Marshal(snap)
	}
	return nil, fmt.Errorf("unknown operation %q", req.Op)
}
