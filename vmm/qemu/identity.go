package qemu

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/microagent-dev/microagent/vmm"
)

// Identity implements vmm.Identifier: the accelerator Start would choose
// now, the CPU model buildArgs gives the guest on it, and the devices cfg
// adds. The strings are recorded by snapshots, so they must stay exactly
// as they are.
func (b *Backend) Identity(cfg vmm.Config) (vmm.Identity, error) {
	accel, _, err := b.accel()
	if err != nil {
		return vmm.Identity{}, err
	}
	return vmm.Identity{Backend: BackendName, Accel: accel, CPU: cpuModel(accel), Devices: devices(&cfg)}, nil
}

// cpuModel names the guest CPU on accel: TCG's "max" is the same
// everywhere; KVM passes the host's CPU through (-cpu host), which differs
// between hosts, so it is named by the host's model.
func cpuModel(accel string) string {
	if accel != AccelKVM {
		return "max"
	}
	b, _ := os.ReadFile(cpuinfoPath)
	for line := range bytes.Lines(b) {
		if k, v, ok := strings.Cut(string(line), ":"); ok && strings.TrimSpace(k) == "model name" {
			return "host: " + strings.TrimSpace(v)
		}
	}
	return "host"
}

// devices renders the device set buildArgs gives a machine with cfg.
func devices(cfg *vmm.Config) string {
	d := fmt.Sprintf("virtio-blk:%d", len(cfg.Disks))
	if cfg.ChannelName != "" {
		d += ",virtio-serial:1"
	}
	if !cfg.Network.Isolated() {
		d += ",virtio-net:1"
	}
	return d
}

// OwnsProcess implements vmm.ProcessOwner: the program is a QEMU
// (qemu-system-*, by its file name) and an argument names a file under dir
// (a disk or the serial log, either as a path or inside a "key=value,..."
// option).
func (b *Backend) OwnsProcess(argv []string, dir string) bool {
	if len(argv) == 0 || !strings.HasPrefix(filepath.Base(argv[0]), "qemu") {
		return false
	}
	dir = filepath.Clean(dir)
	for _, a := range argv {
		if strings.Contains(a, dir+"/") || strings.Contains(a, dir+",") {
			return true
		}
	}
	return false
}
