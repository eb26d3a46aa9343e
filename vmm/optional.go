package vmm

import (
	"context"
	"errors"
	"fmt"
)

// ShutdownReasoner is implemented by machines that can say why they
// stopped, once Done is closed.
type ShutdownReasoner interface {
	// ShutdownReason is the reason of the machine's last shutdown, one of
	// the Reason constants when the guest ended it, another backend's own
	// word otherwise (QEMU's "host-qmp-quit", say), or empty when the
	// backend saw none.
	ShutdownReason() string
}

// Shutdown reasons that callers act on. The words are QEMU's, kept as
// they are because they are recorded in workspaces' state; other backends
// map their own events onto them.
const (
	// ReasonGuestShutdown: the guest powered off.
	ReasonGuestShutdown = "guest-shutdown"
	// ReasonGuestReset: the guest rebooted (or panicked and the kernel
	// reset the machine), which ends the machine: microVMs never reboot.
	ReasonGuestReset = "guest-reset"
	// ReasonGuestPanic: the guest kernel reported a panic.
	ReasonGuestPanic = "guest-panic"
)

// Identity is what a saved machine state depends on beyond the guest's
// kernel, initramfs and size: a state saved by one identity loads only
// into a machine of the same identity. The strings are recorded with
// snapshots and compared as they are, so a backend must never change how
// it renders them.
type Identity struct {
	// Backend is the backend's registered name.
	Backend string
	// Accel is the accelerator ("kvm", "tcg"): device state from one is
	// not loadable into the other.
	Accel string
	// CPU is the guest CPU model the guest sees ("max", or "host: " and
	// the host's model name).
	CPU string
	// Devices is the machine's device set, such as
	// "virtio-blk:2,virtio-serial:1,virtio-net:1".
	Devices string
}

// Diff describes how b, the identity of a machine about to load a state,
// differs from a, the identity the state was saved with: one
// "<what> <a's>, now <b's>" phrase per differing field, none when a state
// from a loads into b.
func (a Identity) Diff(b Identity) []string {
	var diffs []string
	check := func(what, was, now string) {
		if was != now {
			diffs = append(diffs, fmt.Sprintf("%s %s, now %s", what, was, now))
		}
	}
	check("VMM backend", a.Backend, b.Backend)
	check("accelerator", a.Accel, b.Accel)
	check("CPU", a.CPU, b.CPU)
	check("devices", a.Devices, b.Devices)
	return diffs
}

// Identifier is implemented by backends whose machines can be saved and
// restored (see Snapshotter).
type Identifier interface {
	// Identity is the identity a machine started now with cfg gets. A
	// snapshot records it; a restore compares it with the identity of
	// the machine about to load the snapshot.
	Identity(cfg Config) (Identity, error)
}

// IdentityReporter is implemented by machines that know their identity:
// the one Identifier gave for their Config when they started, which is
// what a snapshot of the running machine records.
type IdentityReporter interface {
	Identity() Identity
}

// ProcessOwner is implemented by backends that can recognise their VMM
// processes by command line, so a garbage collector can find and stop the
// machines a crashed supervisor left behind without a record of their pids.
type ProcessOwner interface {
	// OwnsProcess reports whether a process with command line argv (the
	// program first) is this backend's VMM running a machine whose files
	// are under dir.
	OwnsProcess(argv []string, dir string) bool
}

// ProcessBackend names the registered backend whose VMM the process with
// command line argv is, for a machine with files under dir; ok is false
// when it is no registered backend's.
func ProcessBackend(argv []string, dir string) (name string, ok bool) {
	for _, n := range Names() {
		b, err := Lookup(n)
		if err != nil {
			continue // unregistered since Names: not a backend any more
		}
		if po, isOwner := b.(ProcessOwner); isOwner && po.OwnsProcess(argv, dir) {
			return n, true
		}
	}
	return "", false
}

// Check is one host check: can this host run the backend's machines, and
// if not, what fixes it. The JSON form is what "microagent doctor --json"
// prints.
type Check struct {
	// Name is short and stable ("qemu", "accelerator").
	Name string `json:"name"`
	// OK is true when the check passed.
	OK bool `json:"ok"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do about a failure, or (on a pass) how to do better.
	Fix string `json:"fix,omitempty"`
	// Fatal marks a failure that stops any machine from running; a failure
	// that is not fatal is a warning.
	Fatal bool `json:"fatal,omitempty"`
}

// HostChecker is implemented by backends that can check the host for what
// they need (their programs, an accelerator, their network helpers).
type HostChecker interface {
	// HostChecks runs the backend's checks, in the order they are shown.
	HostChecks(ctx context.Context) []Check
}

// NetworkReporter is implemented by machines whose user network runs in a
// process of its own, which can die while the VM runs: the guest is then
// offline, and the caller should say so (or restart the machine).
type NetworkReporter interface {
	// NetworkDone is closed once the network's process has exited; nil
	// when the machine has none (no NIC, or a network inside the VMM).
	NetworkDone() <-chan struct{}
	// NetworkErr is nil until NetworkDone is closed, then nil if the
	// network ended because the VM did, else how it died.
	NetworkErr() error
}

// EgressUpdater is implemented by machines whose user network can change
// its policy while the VM runs.
type EgressUpdater interface {
	// UpdateEgress puts the policy of n (HostAccess, HostPorts,
	// AllowCIDRs, AllowNames, EgressNone; the rest of n is ignored) in
	// force for the flows and DNS queries decided once it returns nil;
	// flows already open stay open. ErrEgressFixed: this machine's
	// network cannot change (it keeps the policy it booted with). Any
	// other error leaves it unknown whether the change is in force.
	UpdateEgress(ctx context.Context, n Network) error
}

// ErrEgressFixed: the running network keeps the policy it started with.
var ErrEgressFixed = errors.New("the running network cannot change its policy")
