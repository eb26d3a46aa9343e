package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// A section is one part of the benchmark, selected by its -sections name:
// run measures into the shared results, summary adds its rows to the
// summary table and report writes its part of the page. Each section's
// type and run are in a file of its own (run.go, rootfs.go, workspace.go,
// density.go, secrets.go, network.go, copy.go, snapshot.go, swap.go, k8s.go), its report
// beside it or in report*.go.
type section interface {
	name() string
	run(ctx context.Context, e *env) error
	summary(b *report, r *results)
	report(b *report, r *results)
}

// A workspaceUser is a section that runs workspaces: before it runs, the
// microagent binary their supervisors re-execute (and the CLI exec runs)
// is built, once.
type workspaceUser interface{ usesWorkspaces() }

// sections are all sections in the order they run (which keeps the floor
// VMs before the workspaces, and the workspace sections together on one
// microagent binary); the report shows them in allSections order.
var sections = []section{
	runSection{}, secretsSection{}, netSection{}, rootfsSection{},
	workspaceSection{}, densitySection{}, copySection{}, snapshotSection{}, swapSection{}, k8sSection{},
}

// allSections are the -sections names, in report order.
var allSections = []string{"run", "rootfs", "workspace", "density", "secrets", "network", "copy", "snapshot", "swap", "k8s"}

// sectionNamed is the section called name (nil: none).
func sectionNamed(name string) section {
	for _, s := range sections {
		if s.name() == name {
			return s
		}
	}
	return nil
}

// env is what every section works with: the options, the results it
// fills, and what the setup built once for all of them.
type env struct {
	opts options
	r    *results
	root string // the module's root (for go build)
	tmp  string // the run's temporary folder
	h    home.Home
	reg  *localRegistry
	// backend boots every VM; vmlinux is the installed kernel and
	// floorInitrd the floor VMs' initramfs (bench/guestinit as /init).
	backend              *qemu.Backend
	vmlinux, floorInitrd string
	// ref is the busybox image in reg, agent the guest agent binary.
	ref, agent string
	// exe is the microagent binary the workspace sections' supervisors
	// re-execute (and their CLI exec runs), built before the first
	// workspaceUser runs.
	exe string
}

// vmDir makes a new folder for one floor VM's runtime files.
func (e *env) vmDir() (string, error) { return os.MkdirTemp(e.tmp, "vm-") }

// runSelected runs the selected sections in order, sampling the load
// average around each. Workspaces left by any section are killed and
// deleted on the way out, error or not.
func (e *env) runSelected(ctx context.Context) error {
	defer func() {
		if e.exe != "" {
			e.cleanupAll()
		}
	}()
	for _, s := range sections {
		if !e.opts.has(s.name()) {
			continue
		}
		if _, ok := s.(workspaceUser); ok {
			if err := e.buildMicroagent(ctx); err != nil {
				return err
			}
		}
		e.r.sampleLoad()
		if err := s.run(ctx, e); err != nil {
			return fmt.Errorf("%s section: %w", s.name(), err)
		}
		e.r.sampleLoad()
	}
	return nil
}

// buildMicroagent builds the microagent binary into e.exe, once.
func (e *env) buildMicroagent(ctx context.Context) error {
	if e.exe != "" {
		return nil
	}
	exe := filepath.Join(e.tmp, "microagent")
	logf("building the microagent binary (workspace supervisors, CLI exec)")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", exe, "./cmd/microagent")
	cmd.Dir = e.root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/microagent: %v\n%s", err, b)
	}
	e.exe = exe
	return nil
}
