package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/wsdir"
)

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
func prepareMemory(ctx context.Context, plan *Plan) (*guestMemory, error) {
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
func guestCmdline(plan *Plan) string {
	if plan.Secrets != nil && plan.Secrets.HasDecls() {
		return "init_on_free=1"
	}
	return ""
}

// restoreOptions turns a restore plan into microvm's.
func restoreOptions(r *RestorePlan) *microvm.Restore {
	if r == nil {
		return nil
	}
	return &microvm.Restore{State: filepath.Join(r.Dir, wsdir.SnapState)}
}
