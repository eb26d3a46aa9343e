package cli

// The CLI's tests run the commands without cmd/microagent, which links the
// VMM backends in: they link QEMU's themselves.
import _ "github.com/microagent-dev/microagent/vmm/qemu"
