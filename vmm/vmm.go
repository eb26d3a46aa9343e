// Package vmm defines the small interface between microagent and a virtual
// machine monitor. A backend (see vmm/qemu) turns a Config into a running
// Machine; callers never build VMM command lines themselves, so another
// monitor (Firecracker on KVM hosts, say) can be added without touching them.
// Backends register by name (Register); what only some backends can do is
// an optional interface (Snapshotter, ShutdownReasoner, Identifier and
// IdentityReporter, ProcessOwner, HostChecker, UserNetworker) that callers
// test for.
package vmm

import (
	"context"
	"net"
	"os"
)

// Disk is one virtio block device. Disks appear in the guest in the order
// given: the first is /dev/vda, the second /dev/vdb, and so on.
type Disk struct {
	// Path is the host file backing the disk.
	Path string
	// Format is "raw" or "qcow2".
	Format string
	// ReadOnly makes the device read-only to the guest.
	ReadOnly bool
}

// Config describes one machine to start.
type Config struct {
	// Kernel is an uncompressed vmlinux with a PVH entry point (or a bzImage).
	Kernel string
	// Initrd is the initramfs the guest agent runs from.
	Initrd string
	// Cmdline holds extra kernel arguments; the backend adds its own
	// console and clock arguments.
	Cmdline string
	// MemoryMiB is the guest RAM size.
	MemoryMiB int
	// CPUs is the number of virtual CPUs.
	CPUs int
	// Disks are attached in order.
	Disks []Disk
	// ChannelName names the guest agent's port (a virtio-serial port's
	// name, see /sys/class/virtio-ports); empty means no agent port. The
	// host end belongs to the machine: see Machine.DialAgent.
	ChannelName string
	// SerialLog is the file that receives the guest's serial console. The
	// backend appends to it (O_APPEND), so its owner may truncate it to
	// bound its size.
	SerialLog string
	// RuntimeDir is a private directory for the backend's sockets and files.
	RuntimeDir string
	// DieWithParent kills the VMM when the process that started it dies
	// (used by one-shot runs, so Ctrl-C or kill -9 never leaves a VM behind).
	DieWithParent bool
	// Network is the guest's network; nil means no NIC (only lo).
	Network *Network
	// Memory backs guest RAM with a file (nil: anonymous memory). Shared
	// RAM lets a snapshot skip copying RAM through the state stream; a
	// private mapping of a saved RAM file is a copy-on-write fork of it.
	Memory *Memory
	// Incoming starts the machine paused, waiting for LoadState (the
	// machine must implement Snapshotter). The backend does not accept the
	// channel connection's bytes before the state is loaded.
	Incoming bool
}

// Memory is a file that backs guest RAM. The backend maps it at start;
// the caller keeps ownership of File (the VMM gets its own descriptor).
type Memory struct {
	// File is the backing file: a memfd or a regular file, exactly the
	// guest's RAM size or empty (then it is sized).
	File *os.File
	// Shared maps File shared: the guest's writes land in it. Otherwise
	// the mapping is private and File never changes.
	Shared bool
}

// Snapshotter is implemented by machines that can save and load their
// state (device state, and RAM unless it is shared: shared RAM is the
// memory file itself and is saved by copying that file while paused).
type Snapshotter interface {
	// Pause stops the guest's CPUs; Resume starts them again.
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// Paused reports whether the guest's CPUs are stopped.
	Paused(ctx context.Context) (bool, error)
	// SaveState writes the machine's state to path; the machine must be
	// paused and stays paused. Block devices are flushed first.
	SaveState(ctx context.Context, path string) error
	// LoadState reads a state SaveState wrote into a machine started with
	// Config.Incoming. If the saved machine's RAM was shared, the stream
	// holds none and Memory must map the saved RAM file; if it was
	// private, the stream holds the RAM and Memory must be private too
	// (the stream's RAM is refused for shared memory). The machine is
	// paused afterwards.
	LoadState(ctx context.Context, path string) error
}

// Machine is a started virtual machine.
type Machine interface {
	// PID is the VMM's process id.
	PID() int
	// Done is closed once the VMM process has exited.
	Done() <-chan struct{}
	// Wait blocks until the VMM exits and returns how it ended.
	Wait() error
	// Shutdown asks the VMM to stop at once (the guest agent has already
	// synced its disks); it returns when the process has exited or ctx ends.
	Shutdown(ctx context.Context) error
	// Kill stops the VMM process immediately.
	Kill() error
	// DialAgent connects to the guest agent's port (Config.ChannelName).
	// A booting machine's connection is made as it starts, so the host's
	// greeting is waiting when the agent opens its port. A machine started
	// with Incoming is connected only when asked, which must be after
	// Resume: the restored agent must first see its old host end gone and
	// return to the handshake (see channel.Reconnect). A backend may serve
	// one connection per machine (QEMU's virtio-serial has one host end).
	DialAgent(ctx context.Context) (net.Conn, error)
}

// Backend starts machines.
type Backend interface {
	// Name identifies the backend ("qemu").
	Name() string
	// Start boots a machine described by cfg.
	Start(ctx context.Context, cfg Config) (Machine, error)
}
