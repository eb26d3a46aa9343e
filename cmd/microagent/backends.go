package main

// The VMM backends this program ships: each registers itself with vmm
// (vmm.Register) when linked in, and this file is the only place above
// vmm that names one. A second backend added here makes callers choose by
// name (see vmm.Default).
import _ "github.com/microagent-dev/microagent/vmm/qemu"
