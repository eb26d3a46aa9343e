package workspace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
	"github.com/microagent-dev/microagent/wsdir"
)

// snapshotTimeout bounds one capture (purge, device state, RAM and disk
// copies) in the supervisor.
const snapshotTimeout = 10 * time.Minute

// restorePlan is the part of a boot plan that resumes a saved machine.
type restorePlan struct {
	// Dir holds the saved state: a snapshot folder (an in-place restore)
	// or the fork's restore folder (links to the snapshot's files).
	Dir string `json:"dir"`
	// SharedRAM: Dir/memory holds the RAM (else the state stream does).
	SharedRAM bool `json:"sharedRAM"`
	// Fork maps Dir/memory privately (copy-on-write, no copy at all) and
	// removes Dir once the guest runs; an in-place restore copies the RAM
	// into the workspace's own shared memory instead, so that its later
	// snapshots stay cheap.
	Fork bool `json:"fork,omitempty"`
	// Tag and Source name the snapshot, for logs and audit.
	Tag    string `json:"tag"`
	Source string `json:"source"`
}

// guestMemory is the workspace's guest RAM.
type guestMemory struct {
	file   *os.File
	shared bool
}

func (m *guestMemory) close() {
	if m != nil && m.file != nil {
		m.file.Close()
	}
}

// newMemfd makes an anonymous shared-memory file of size bytes: guest RAM
// that the supervisor can copy while the guest is paused, and that
// vanishes with the last process holding it (no file to clean up after a
// crash).
func newMemfd(name string, size int64) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("guest memory: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("guest memory: %w", err)
	}
	return f, nil
}

// prepareMemory makes the guest RAM for a boot plan.
func prepareMemory(ctx context.Context, plan *bootPlan) (*guestMemory, error) {
	size := int64(plan.MemoryMiB) << 20
	r := plan.Restore
	if r != nil && r.SharedRAM && r.Fork {
		f, err := os.Open(filepath.Join(r.Dir, wsdir.SnapMemory))
		if err != nil {
			return nil, fmt.Errorf("snapshot RAM: %w", err)
		}
		return &guestMemory{file: f}, nil
	}
	f, err := newMemfd("microagent-ram", size)
	if err != nil {
		return nil, err
	}
	if r != nil && !r.SharedRAM {
		// The RAM comes in the state stream, which QEMU loads only into
		// private memory; this boot's own snapshots then stream it too.
		return &guestMemory{file: f}, nil
	}
	if r != nil && r.SharedRAM {
		in, err := os.Open(filepath.Join(r.Dir, wsdir.SnapMemory))
		if err == nil {
			err = fsutil.CopySparse(ctx, in, f, size, nil)
			in.Close()
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("load the snapshot's RAM: %w", err)
		}
	}
	return &guestMemory{file: f, shared: true}, nil
}

// guestCmdline is the extra kernel command line of a boot. With secrets the
// guest zeroes every page it frees (init_on_free=1), so a secret it purged,
// or that an exited process had read, leaves no copy in a snapshot. It is
// only set then: it makes the kernel write every page of RAM at boot, which
// costs boot time under emulation and makes all of the guest's RAM
// resident on the host.
func guestCmdline(plan *bootPlan) string {
	if plan.Secrets != nil && plan.Secrets.HasDecls() {
		return "init_on_free=1"
	}
	return ""
}

// restoreOptions turns a restore plan into microvm's.
func restoreOptions(r *restorePlan) *microvm.Restore {
	if r == nil {
		return nil
	}
	return &microvm.Restore{State: filepath.Join(r.Dir, wsdir.SnapState)}
}

// snapshotter is the running machine's snapshot interface.
func (s *supervisor) snapshotter() (vmm.Snapshotter, error) {
	sn, ok := s.vm.Machine.(vmm.Snapshotter)
	if !ok {
		return nil, errors.New("this VMM backend cannot pause or snapshot a machine")
	}
	return sn, nil
}

// pause stops the guest's CPUs.
func (s *supervisor) pause(ctx context.Context) error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if s.isPaused() {
		return nil
	}
	sn, err := s.snapshotter()
	if err != nil {
		return err
	}
	if err := sn.Pause(ctx); err != nil {
		return err
	}
	s.setPaused(true)
	s.log.Printf("paused")
	return nil
}

// resume runs the guest again and then brings it up to date.
func (s *supervisor) resume(ctx context.Context) error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	return s.resumeLocked(ctx)
}

func (s *supervisor) resumeLocked(ctx context.Context) error {
	if !s.isPaused() {
		return nil
	}
	sn, err := s.snapshotter()
	if err != nil {
		return err
	}
	if err := sn.Resume(ctx); err != nil {
		return err
	}
	s.setPaused(false)
	s.log.Printf("resumed")
	return s.afterResume(ctx)
}

// resumed brings a resumed, restored or forked guest up to date: its clock
// (it stood still, or is the snapshot's) and its random generator (a copy
// that other VMs of the snapshot share), and for a fork a new identity.
// Until that is confirmed the guest must not be treated as ready.
func (s *supervisor) resumed(ctx context.Context, fork bool) error {
	req := channel.ResumedRequest{}
	if fork {
		req.Hostname, req.MachineID = s.w.Name, channel.NewMachineID()
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.vm.Client.Resumed(rctx, req); err != nil {
		return fmt.Errorf("the resumed guest did not confirm its new clock and entropy: %w", err)
	}
	return nil
}

// afterResume updates the guest (see resumed) and gives back the secrets a
// snapshot purged.
func (s *supervisor) afterResume(ctx context.Context) error {
	if err := s.resumed(ctx, false); err != nil {
		return err
	}
	if !s.purged {
		return nil
	}
	if err := s.sec.rehydrate(ctx, s.vm.Client); err != nil {
		s.log.Printf("rehydrate secrets: %v", err)
		return fmt.Errorf("the guest runs again, but its secrets could not be restored: %w", err)
	}
	s.purged = false
	return nil
}

func (s *supervisor) isPaused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paused
}

func (s *supervisor) setPaused(p bool) {
	s.mu.Lock()
	s.paused = p
	s.mu.Unlock()
	s.w.Update(func(r *wsdir.Record) error {
		if r.Boot != s.boot || r.State != Running {
			return wsdir.ErrSkip
		}
		r.Paused = p
		return nil
	})
}

// snapshot captures the machine into snapshots/<tag>.
func (s *supervisor) snapshot(ctx context.Context, tag string) (snap *Snapshot, err error) {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if err := ValidateTag(tag); err != nil {
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
	snap = &Snapshot{
		Tag: tag, Workspace: s.w.Name, Created: start.UTC(), Image: s.manifest.Image,
		MemoryMiB: s.plan.MemoryMiB, CPUs: s.plan.CPUs, Kernel: s.plan.KernelID, Initrd: s.plan.Initrd,
		Accel: s.accel(), CPU: cpuModel(s.accel()), Devices: machineDevices(s.plan.Network), SharedRAM: s.mem.shared, Paused: wasPaused,
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
	if err := sn.SaveState(ctx, filepath.Join(tmp, wsdir.SnapState)); err != nil {
		return nil, err
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
	if err := renameNoReplace(tmp, final); err != nil {
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

// accel names the accelerator the machine runs on (device state from TCG
// and KVM is not interchangeable).
func (s *supervisor) accel() string {
	if a, ok := s.vm.Machine.(interface{ Accel() string }); ok {
		return a.Accel()
	}
	return ""
}

// machineDevices describes the device set of a workspace's machine, which
// a restore must match: the disks, the agent's port, and the NIC if any.
func machineDevices(n *vmm.Network) string {
	d := "virtio-blk:2,virtio-serial:1"
	if !n.Isolated() {
		d += ",virtio-net:1"
	}
	return d
}

// cpuModel names the guest CPU a machine on accel gets (see vmm/qemu).
func cpuModel(accel string) string {
	if accel != qemu.AccelKVM {
		return "max"
	}
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return "host: " + strings.TrimSpace(v)
		}
	}
	return "host"
}

// handleControl serves pause, resume and snapshot requests.
func (s *supervisor) handleControl(req supRequest) ([]byte, error) {
	s.mu.Lock()
	phase := s.phase
	s.mu.Unlock()
	if phase != Running {
		return nil, fmt.Errorf("workspace %s is %s", s.w.Name, phase)
	}
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	switch req.Op {
	case opPause:
		return nil, s.pause(ctx)
	case opResume:
		return nil, s.resume(ctx)
	case opSnapshot:
		snap, err := s.snapshot(ctx, req.Tag)
		if err != nil {
			s.log.Printf("snapshot %s failed: %v", req.Tag, err)
			return nil, err
		}
		return json.Marshal(snap)
	}
	return nil, fmt.Errorf("unknown operation %q", req.Op)
}

// materializes reports whether the workspace puts secrets in /run/secrets.
func (s *supSecrets) materializes() bool { return s != nil && s.cfg.HasDecls() }

// recordPurge notes the purge in the supervisor log (the names only).
func (s *supSecrets) recordPurge(names []string) {
	s.lg.Printf("secrets: guest purged %d materialized secrets before a snapshot", len(names))
}

// rehydrate resolves the materialized secrets again and hands them to the
// guest (an audit record of kind rehydrate each).
func (s *supSecrets) rehydrate(ctx context.Context, c *channel.Client) error {
	if !s.materializes() {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	prep, err := conduit.Resolve(rctx, s.cfg.Declarations, s.env)
	cancel()
	if err != nil {
		if aerr := s.audit.logOrNil().GateBundle(audit.Rehydrate, nil, err); aerr != nil {
			err = aerr
		}
		return err
	}
	defer prep.Zero()
	if err := s.audit.check(); err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, deliverTimeout)
	defer cancel()
	prep.Each(s.sentValues.add)
	return prep.Deliver(dctx, c, s.audit.logOrNil(), audit.Rehydrate)
}
