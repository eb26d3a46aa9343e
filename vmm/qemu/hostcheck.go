package qemu

import (
	"context"
	"os/exec"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/passt"
)

// qemuFix installs QEMU and qemu-img (doctor's advice also covers the
// image tools, unlike installHint in a start error).
const qemuFix = "apt-get install --no-install-recommends qemu-system-x86 qemu-utils"

// HostChecks implements vmm.HostChecker: QEMU runs and says its version
// (fatal otherwise), which accelerator machines get and why, and whether
// the user network is passt's or the closed slirp fallback (a warning).
func (b *Backend) HostChecks(ctx context.Context) []vmm.Check {
	var checks []vmm.Check
	name := b.opts.Binary
	if name == "" {
		name = DefaultBinary
	}
	if bin, err := exec.LookPath(name); err != nil {
		checks = append(checks, vmm.Check{Name: "qemu", Detail: name + " not found", Fix: qemuFix, Fatal: true})
	} else if v, err := version(ctx, bin); err != nil {
		checks = append(checks, vmm.Check{Name: "qemu", Detail: err.Error(), Fix: qemuFix, Fatal: true})
	} else {
		checks = append(checks, vmm.Check{Name: "qemu", OK: true, Detail: bin + " " + v})
	}
	if accel, why, err := b.accel(); err != nil {
		checks = append(checks, vmm.Check{Name: "accelerator", Detail: err.Error(), Fix: "set Options.Accel to kvm, tcg or empty", Fatal: true})
	} else if accel == AccelKVM {
		checks = append(checks, vmm.Check{Name: "accelerator", OK: true, Detail: "kvm: " + why})
	} else {
		checks = append(checks, vmm.Check{Name: "accelerator", OK: true, Detail: "tcg (software emulation, boots take seconds): " + why,
			Fix: "for KVM, run on a host with /dev/kvm usable by this user"})
	}
	// Not fatal: without passt the user network still works, closed.
	if un := b.UserNetwork(); un.Outbound {
		checks = append(checks, vmm.Check{Name: "user network", OK: true, Detail: un.Provider + ": outbound traffic and DNS, the host's loopback only with --host-access"})
	} else {
		checks = append(checks, vmm.Check{Name: "user network", Detail: SlirpFallback, Fix: passt.InstallHint})
	}
	return checks
}
