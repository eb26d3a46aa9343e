// Package microvm boots one guest from prepared parts (kernel, initramfs,
// root disk, writable disk) through a vmm.Backend and connects to its agent.
// It knows nothing about images or workspaces: callers prepare the disks.
package microvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/vmm"
)

// Options describe the VM to boot.
type Options struct {
	Backend vmm.Backend
	// Kernel and Initrd are the guest kernel (vmlinux) and the initramfs that
	// carries the agent and the kernel modules.
	Kernel, Initrd string
	// RootDisk is the image's read-only ext4; WritableDisk the overlay's
	// upper layer (ext4).
	RootDisk, WritableDisk string
	MemoryMiB, CPUs        int
	// Cmdline holds extra kernel arguments.
	Cmdline string
	// RuntimeDir is the backend's private directory (its sockets); it must
	// exist and be private (0700).
	RuntimeDir string
	// SerialLog receives the guest console.
	SerialLog string
	// Hello is sent to the agent once it answers (the clock is filled in).
	Hello channel.HelloRequest
	// BootTimeout bounds boot to agent-ready (default 2 minutes: an emulated
	// guest on a loaded host can be slow).
	BootTimeout time.Duration
	// DieWithParent ties the VMM's life to the calling process.
	DieWithParent bool
	// Network is the guest's network (nil: no NIC). The matching guest
	// setup goes in Hello.Network.
	Network *vmm.Network
	// Memory backs guest RAM with a file (see vmm.Memory).
	Memory *vmm.Memory
	// Restore resumes a saved machine instead of booting the kernel.
	Restore *Restore
}

// Restore names a saved machine state to resume (see vmm.Snapshotter).
type Restore struct {
	// State is the device state file SaveState wrote.
	State string
}

// VM is a booted guest whose agent has answered.
type VM struct {
	Machine vmm.Machine
	Client  *channel.Client
	// Ready is how long boot took, from VMM start to the agent's answer.
	Ready  time.Duration
	serial string
}

// config is the machine Boot starts for o.
func (o *Options) config() vmm.Config {
	return vmm.Config{
		Kernel:    o.Kernel,
		Initrd:    o.Initrd,
		Cmdline:   o.Cmdline,
		MemoryMiB: o.MemoryMiB,
		CPUs:      o.CPUs,
		Disks: []vmm.Disk{
			{Path: o.RootDisk, Format: "raw", ReadOnly: true},
			{Path: o.WritableDisk, Format: "raw"},
		},
		ChannelName:   channel.PortName,
		SerialLog:     o.SerialLog,
		RuntimeDir:    o.RuntimeDir,
		DieWithParent: o.DieWithParent,
		Network:       o.Network,
		Memory:        o.Memory,
		Incoming:      o.Restore != nil,
	}
}

// Identity is the identity of the machine Boot(o) would start now (only
// o.Backend and o.Network matter): a restore compares it with the one the
// snapshot recorded (the running machine's, see vmm.IdentityReporter).
// It is zero when the backend is no vmm.Identifier.
func Identity(o Options) (vmm.Identity, error) {
	id, ok := o.Backend.(vmm.Identifier)
	if !ok {
		return vmm.Identity{}, nil
	}
	return id.Identity(o.config())
}

// Boot starts the VM and waits for its agent. On any error nothing is left
// running.
func Boot(ctx context.Context, o Options) (*VM, error) {
	if o.BootTimeout == 0 {
		o.BootTimeout = 2 * time.Minute
	}
	start := time.Now()
	m, err := o.Backend.Start(ctx, o.config())
	if err != nil {
		return nil, err
	}
	// A booting guest's connection was made as the VMM started, so the
	// greeting is waiting when the agent opens its port. A restored guest
	// is connected only once it runs again (see vmm.Machine.DialAgent).
	connect := channel.Connect
	if o.Restore != nil {
		if err = resume(ctx, m, o.Restore); err != nil {
			m.Kill()
			m.Wait()
			return nil, err
		}
		connect = channel.Reconnect
	}
	conn, err := m.DialAgent(ctx)
	if err != nil {
		m.Kill()
		m.Wait()
		if o.Restore != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		return nil, fmt.Errorf("agent channel: %w", err)
	}

	vm := &VM{Machine: m, serial: o.SerialLog}
	bctx, cancel := context.WithTimeout(ctx, o.BootTimeout)
	defer cancel()
	// The VMM exiting during boot ends the wait at once.
	go func() {
		select {
		case <-m.Done():
			cancel()
		case <-bctx.Done():
		}
	}()
	client, err := connect(bctx, conn)
	if err == nil {
		o.Hello.UnixNano = time.Now().UnixNano()
		var hr *channel.HelloReply
		hr, err = client.Hello(bctx, o.Hello)
		if err == nil && hr.BootError != "" {
			err = &GuestBootError{Step: hr.BootError}
		}
		if err != nil {
			client.Close()
		}
	}
	if err != nil {
		err = vm.bootFailure(ctx, err, o.BootTimeout)
		m.Kill()
		m.Wait()
		return nil, err
	}
	vm.Client = client
	vm.Ready = time.Since(start)
	return vm, nil
}

// resume loads a saved state into a machine started with Incoming and
// runs it.
func resume(ctx context.Context, m vmm.Machine, r *Restore) error {
	sn, ok := m.(vmm.Snapshotter)
	if !ok {
		return errors.New("restore: this VMM backend cannot load a saved state")
	}
	if err := sn.LoadState(ctx, r.State); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := sn.Resume(ctx); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// GuestBootError is a boot step the guest agent reported as failed.
type GuestBootError struct {
	// Step is the agent's description: the step and its cause.
	Step string
}

func (e *GuestBootError) Error() string { return "the guest failed to boot: " + e.Step }

// bootFailure explains why boot did not reach the agent: the caller gave up,
// the VMM died, or the guest said nothing in time.
func (v *VM) bootFailure(ctx context.Context, err error, limit time.Duration) error {
	var gb *GuestBootError
	if errors.As(err, &gb) {
		return fmt.Errorf("%w%s", err, v.consoleTail())
	}
	// A VMM killed mid-handshake first shows as a reset connection; give
	// its exit a moment to be seen, so the message names the real cause.
	select {
	case <-v.Machine.Done():
		werr := v.Machine.Wait()
		return fmt.Errorf("the VM stopped during boot: %v%s", werr, v.consoleTail())
	case <-time.After(time.Second):
	}
	if ctx.Err() != nil {
		return fmt.Errorf("boot interrupted: %w", ctx.Err())
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("the guest agent did not answer within %s%s", limit, v.consoleTail())
	}
	return fmt.Errorf("boot: %w%s", err, v.consoleTail())
}

// consoleTail quotes the agent's own lines from the serial log, which name a
// failed boot step.
func (v *VM) consoleTail() string {
	b, err := os.ReadFile(v.serial)
	if err != nil {
		return ""
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "microagent-agent:") || strings.Contains(line, "Kernel panic") {
			keep = append(keep, strings.TrimSpace(line))
		}
	}
	if len(keep) > 5 {
		keep = keep[len(keep)-5:]
	}
	if len(keep) == 0 {
		return ""
	}
	return " (guest console: " + strings.Join(keep, "; ") + ")"
}

// Shutdown stops the guest's processes, syncs its disks and stops the VMM.
func (v *VM) Shutdown(ctx context.Context) error {
	var first error
	if v.Client != nil {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		first = v.Client.Shutdown(sctx)
		cancel()
		v.Client.Close()
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := v.Machine.Shutdown(qctx); err != nil && first == nil {
		first = err
	}
	return first
}

// Kill stops the VMM at once.
func (v *VM) Kill() {
	if v.Client != nil {
		v.Client.Close()
	}
	v.Machine.Kill()
	v.Machine.Wait()
}
