// Package hostcheck answers "can this host run microVMs, and if not, what
// fixes it": the checks behind "microagent doctor", as a library, so that
// anything that has to decide whether to place work on a host (a cluster
// scheduler's fingerprint, a health check) asks the same questions. The
// VMM's own checks come from its backend (vmm.HostChecker); this package
// names no monitor.
package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/vmm"
)

// Check is one check's result (see vmm.Check).
type Check = vmm.Check

// MinFreeDisk is the free space asked for in the state directory: a root
// disk, a writable layer and a kernel with room to spare.
const MinFreeDisk = 2 << 30

// Options say what to check.
type Options struct {
	// Home is the state directory whose kernel, writability and free
	// space are checked (it is created if missing).
	Home home.Home
	// Backend is the VMM whose host checks run; nil means vmm.Default().
	Backend vmm.Backend
}

// Checks runs every check, in the order doctor shows them: the backend's
// (when it has any), then mkfs.ext4, the guest agent, the kernel, the state
// directory and its free space. It never stops early: each failure comes
// with its fix.
func Checks(ctx context.Context, o Options) []Check {
	var checks []Check
	add := func(c Check) { checks = append(checks, c) }

	b := o.Backend
	if b == nil {
		var err error
		if b, err = vmm.Default(); err != nil {
			add(Check{Name: "vmm backend", Detail: err.Error(), Fix: "build microagent with a VMM backend", Fatal: true})
		}
	}
	if hc, ok := b.(vmm.HostChecker); ok {
		checks = append(checks, hc.HostChecks(ctx)...)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		add(Check{Name: "mkfs.ext4", Detail: "not found (needed for writable disks)", Fix: "apt-get install e2fsprogs", Fatal: true})
	} else {
		add(Check{Name: "mkfs.ext4", OK: true, Detail: "found"})
	}
	if p, err := guestboot.AgentBinary(); err != nil {
		add(Check{Name: "guest agent", Detail: err.Error(), Fix: "make build", Fatal: true})
	} else {
		add(Check{Name: "guest agent", OK: true, Detail: p})
	}
	add(kernelCheck(o.Home))
	checks = append(checks, stateChecks(o.Home)...)
	return checks
}

// kernelCheck: the installed guest kernel verifies; a missing one is only
// a warning, since it is installed on first use.
func kernelCheck(h home.Home) Check {
	k, err := kernel.Default(h)
	if err != nil {
		detail := err.Error()
		if errors.Is(err, kernel.ErrNotInstalled) {
			detail = "not installed (installed on first use when apt-get is available)"
		}
		return Check{Name: "kernel", Detail: detail, Fix: "microagent kernel install"}
	}
	if err := k.Verify(); err != nil {
		return Check{Name: "kernel", Detail: err.Error(), Fix: "microagent kernel install --force", Fatal: true}
	}
	return Check{Name: "kernel", OK: true, Detail: k.String() + " (verified)"}
}

// stateChecks: the state directory can be created and written, and, when
// it can, has MinFreeDisk free.
func stateChecks(h home.Home) []Check {
	const fix = "use --state-dir or MICROAGENT_HOME to pick a writable folder"
	if err := os.MkdirAll(h.Root, 0o700); err != nil {
		return []Check{{Name: "state directory", Detail: err.Error(), Fix: fix, Fatal: true}}
	}
	f, err := os.CreateTemp(h.Root, ".doctor-*")
	if err != nil {
		return []Check{{Name: "state directory", Detail: h.Root + " is not writable: " + err.Error(), Fix: fix, Fatal: true}}
	}
	f.Close()
	os.Remove(f.Name())
	checks := []Check{{Name: "state directory", OK: true, Detail: h.Root}}
	var st unix.Statfs_t
	if err := unix.Statfs(h.Root, &st); err == nil {
		free := int64(st.Bavail) * int64(st.Bsize)
		c := Check{Name: "free disk", OK: free >= MinFreeDisk, Detail: fmt.Sprintf("%.1f GiB free in %s", float64(free)/(1<<30), h.Root)}
		if !c.OK {
			c.Fix, c.Fatal = "free some space, or run \"microagent image prune\"", true
		}
		checks = append(checks, c)
	}
	return checks
}

// Fatal reports whether a check failed fatally: no microVM can run here.
func Fatal(checks []Check) bool {
	return slices.ContainsFunc(checks, func(c Check) bool { return !c.OK && c.Fatal })
}
