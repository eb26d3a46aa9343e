package qemu

import (
	"context"
	"os/exec"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/passt"
	"github.com/microagent-dev/microagent/vmm/usernet"
)

// qemuFix installs QEMU and qemu-img (doctor's advice also covers the
// image tools, unlike installHint in a start error).
const qemuFix = "apt-get install --no-install-recommends qemu-system-x86 qemu-utils"

// HostChecks implements vmm.HostChecker: QEMU runs and says its version
// (fatal otherwise), which accelerator machines get and why, and whether
// the user network's program is there (fatal: a VM with a NIC needs it).
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
	checks = append(checks, b.userNetworkCheck())
	return checks
}

// userNetworkCheck says whether the user network's program is there: a VM
// with a NIC does not boot without it.
func (b *Backend) userNetworkCheck() vmm.Check {
	switch b.opts.UserNet {
	case UserNetSlirp:
		return vmm.Check{Name: "user network", Detail: SlirpFallback, Fix: "leave Options.UserNet empty for microagent's own network"}
	case UserNetPasst:
		p, err := passt.Find(b.opts.Passt)
		if err != nil {
			return vmm.Check{Name: "user network", Detail: err.Error(), Fix: passt.InstallHint, Fatal: true}
		}
		return vmm.Check{Name: "user network", OK: true, Detail: "passt " + p}
	}
	p, err := usernet.FindHelper(b.opts.NetHelper)
	if err != nil {
		return vmm.Check{Name: "user network", Detail: err.Error(), Fix: "make build (it installs " + usernet.BinaryName + " beside microagent)", Fatal: true}
	}
	return vmm.Check{Name: "user network", OK: true, Detail: p + ": outbound to public addresses and DNS; private ranges and the host only when opened (--host-access)"}
}
