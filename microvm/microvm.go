// Package microvm boots one guest from prepared parts (kernel, initramfs,
// root disk, writable disk) through a vmm.Backend and connects to its agent.
// It knows nothing about images or workspaces: callers prepare the disks.
package microvm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
	// RuntimeDir holds the channel socket while booting; it must exist and
	// be private (0700).
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

// maxSocketPath is the longest path a UNIX socket can bind to.
const maxSocketPath = 107

// Boot starts the VM and waits for its agent. On any error nothing is left
// running.
func Boot(ctx context.Context, o Options) (*VM, error) {
	if o.BootTimeout == 0 {
		o.BootTimeout = 2 * time.Minute
	}
	sock := filepath.Join(o.RuntimeDir, "ch.sock")
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("runtime directory %s is too long for a UNIX socket path (%d > %d bytes): use a shorter state directory",
			o.RuntimeDir, len(sock), maxSocketPath)
	}
	os.Remove(sock)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("channel socket: %w", err)
	}
	// A booting guest: connect before the VMM even starts; the connection
	// waits in the backlog. Closing the listener then unlinks the path, so
	// no one else can reach the guest's agent through it; QEMU gets a copy
	// of the listening socket. A restored guest: connect only once it runs
	// again, so that its agent first sees the old host end gone (EOF on
	// its port) and returns to the handshake.
	var conn net.Conn
	if o.Restore == nil {
		if conn, err = net.Dial("unix", sock); err != nil {
			l.Close()
			return nil, fmt.Errorf("channel socket: %w", err)
		}
	} else {
		l.SetUnlinkOnClose(false)
		defer os.Remove(sock)
	}
	lf, err := l.File()
	l.Close()
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, fmt.Errorf("channel socket: %w", err)
	}
	defer lf.Close()

	start := time.Now()
	m, err := o.Backend.Start(ctx, vmm.Config{
		Kernel:    o.Kernel,
		Initrd:    o.Initrd,
		Cmdline:   o.Cmdline,
		MemoryMiB: o.MemoryMiB,
		CPUs:      o.CPUs,
		Disks: []vmm.Disk{
			{Path: o.RootDisk, Format: "raw", ReadOnly: true},
			{Path: o.WritableDisk, Format: "raw"},
		},
		Channel:       lf,
		ChannelName:   channel.PortName,
		SerialLog:     o.SerialLog,
		RuntimeDir:    o.RuntimeDir,
		DieWithParent: o.DieWithParent,
		Network:       o.Network,
		Memory:        o.Memory,
		Incoming:      o.Restore != nil,
	})
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return nil, err
	}
	lf.Close()
	connect := channel.Connect
	if o.Restore != nil {
		if conn, err = resume(ctx, m, o.Restore, sock); err != nil {
			m.Kill()
			m.Wait()
			return nil, err
		}
		connect = channel.Reconnect
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

// resume loads a saved state into a machine started with Incoming, runs
// it, and connects to its channel.
func resume(ctx context.Context, m vmm.Machine, r *Restore, sock string) (net.Conn, error) {
	sn, ok := m.(vmm.Snapshotter)
	if !ok {
		return nil, errors.New("restore: this VMM backend cannot load a saved state")
	}
	if err := sn.LoadState(ctx, r.State); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := sn.Resume(ctx); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("restore: channel socket: %w", err)
	}
	return conn, nil
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
