package qemu

import "github.com/microagent-dev/microagent/vmm"

// BackendName is the name the backend registers under (vmm.Register) and
// Backend.Name returns; workspaces and snapshots record it.
const BackendName = "qemu"

// The backend with default options (QEMU from PATH, the accelerator
// detected, passt when installed) is what vmm.Lookup("qemu") returns.
func init() {
	vmm.Register(BackendName, func() vmm.Backend { return New(Options{}) })
}
