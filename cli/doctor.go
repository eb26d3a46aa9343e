package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/runner"
	"github.com/microagent-dev/microagent/vmm/passt"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// check is one line of doctor's report.
type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
	// Fatal failures mean no VM can run.
	Fatal bool `json:"fatal,omitempty"`
}

// minFreeDisk is the free space doctor asks for: a root disk, a writable
// layer and a kernel with room to spare.
const minFreeDisk = 2 << 30

func newDoctorCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run microVMs, and say how to fix what is missing",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var checks []check
			add := func(ch check) { checks = append(checks, ch) }

			const qemuFix = "apt-get install --no-install-recommends qemu-system-x86 qemu-utils"
			if bin, err := exec.LookPath("qemu-system-x86_64"); err != nil {
				add(check{Name: "qemu", Detail: "qemu-system-x86_64 not found", Fix: qemuFix, Fatal: true})
			} else if v, err := qemu.Version(bin); err != nil {
				add(check{Name: "qemu", Detail: err.Error(), Fix: qemuFix, Fatal: true})
			} else {
				add(check{Name: "qemu", OK: true, Detail: bin + " " + v})
			}
			accel, why := qemu.DetectAccel()
			if accel == "kvm" {
				add(check{Name: "accelerator", OK: true, Detail: "kvm: " + why})
			} else {
				add(check{Name: "accelerator", OK: true, Detail: "tcg (software emulation, boots take seconds): " + why,
					Fix: "for KVM, run on a host with /dev/kvm usable by this user"})
			}
			// Not fatal: without passt the user network still works, closed.
			if un := qemu.New(qemu.Options{}).UserNetwork(); un.Outbound {
				add(check{Name: "user network", OK: true, Detail: un.Provider + ": outbound traffic and DNS, the host's loopback only with --host-access"})
			} else {
				add(check{Name: "user network", Detail: qemu.SlirpFallback, Fix: passt.InstallHint})
			}
			if _, err := exec.LookPath("mkfs.ext4"); err != nil {
				add(check{Name: "mkfs.ext4", Detail: "not found (needed for writable disks)", Fix: "apt-get install e2fsprogs", Fatal: true})
			} else {
				add(check{Name: "mkfs.ext4", OK: true, Detail: "found"})
			}
			if p, err := runner.AgentBinary(); err != nil {
				add(check{Name: "guest agent", Detail: err.Error(), Fix: "make build", Fatal: true})
			} else {
				add(check{Name: "guest agent", OK: true, Detail: p})
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			if k, err := kernel.Default(h); err != nil {
				fix := "microagent kernel install"
				detail := err.Error()
				if errors.Is(err, kernel.ErrNotInstalled) {
					detail = "not installed (installed on first use when apt-get is available)"
				}
				add(check{Name: "kernel", Detail: detail, Fix: fix})
			} else if err := k.Verify(); err != nil {
				add(check{Name: "kernel", Detail: err.Error(), Fix: "microagent kernel install --force", Fatal: true})
			} else {
				add(check{Name: "kernel", OK: true, Detail: k.String() + " (verified)"})
			}
			if err := os.MkdirAll(h.Root, 0o700); err != nil {
				add(check{Name: "state directory", Detail: err.Error(), Fix: "use --state-dir or MICROAGENT_HOME to pick a writable folder", Fatal: true})
			} else if f, err := os.CreateTemp(h.Root, ".doctor-*"); err != nil {
				add(check{Name: "state directory", Detail: h.Root + " is not writable: " + err.Error(), Fix: "use --state-dir or MICROAGENT_HOME to pick a writable folder", Fatal: true})
			} else {
				f.Close()
				os.Remove(f.Name())
				add(check{Name: "state directory", OK: true, Detail: h.Root})
				var st unix.Statfs_t
				if err := unix.Statfs(h.Root, &st); err == nil {
					free := int64(st.Bavail) * int64(st.Bsize)
					ch := check{Name: "free disk", OK: free >= minFreeDisk, Detail: fmt.Sprintf("%.1f GiB free in %s", float64(free)/(1<<30), h.Root)}
					if !ch.OK {
						ch.Fix, ch.Fatal = "free some space, or run \"microagent image prune\"", true
					}
					add(ch)
				}
			}

			fatal := false
			for _, ch := range checks {
				fatal = fatal || (!ch.OK && ch.Fatal)
			}
			if g.json {
				if err := g.printJSON(map[string]any{"ok": !fatal, "checks": checks}); err != nil {
					return err
				}
			} else {
				for _, ch := range checks {
					mark := "ok  "
					if !ch.OK {
						mark = "FAIL"
						if !ch.Fatal {
							mark = "warn"
						}
					}
					fmt.Fprintf(g.stdout, "%s %-16s %s\n", mark, ch.Name, ch.Detail)
					if !ch.OK && ch.Fix != "" {
						fmt.Fprintf(g.stdout, "     %-16s fix: %s\n", "", ch.Fix)
					}
				}
			}
			if fatal {
				return &ExitError{Code: ExitFailure, Err: errors.New("this host cannot run microVMs yet: see the fixes above")}
			}
			return nil
		},
	}
}
