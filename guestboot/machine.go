package guestboot

import (
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/vmm"
)

// Machine is the guest one boot starts: the prepared parts by path, its
// size, its network and the hello its agent gets. A workspace's boot plan
// carries it from the start to the supervisor (hence the JSON names).
type Machine struct {
	// Kernel and Initrd are Parts.Kernel's vmlinux and Parts.Initramfs.
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd"`
	// RootDisk is the image's read-only root disk.
	RootDisk  string               `json:"rootDisk"`
	MemoryMiB int                  `json:"memoryMiB"`
	CPUs      int                  `json:"cpus"`
	Hello     channel.HelloRequest `json:"hello"`
	// Network is the VM's network (nil: no NIC); Hello.Network is the
	// guest's matching setup.
	Network *vmm.Network `json:"network,omitempty"`
}

// Machine is the guest that boots p with r's memory and CPUs as hostname
// on network n (nil: none) over user network u: the hello gives it the
// image's Env, User and WorkingDir and the network setup that matches n.
func (p *Parts) Machine(r Resources, hostname string, n *vmm.Network, u vmm.UserNetwork) Machine {
	cfg := p.Image.Config
	return Machine{
		Kernel:    p.Kernel.Vmlinux,
		Initrd:    p.Initramfs,
		RootDisk:  p.RootDisk,
		MemoryMiB: r.MemoryMiB,
		CPUs:      r.CPUs,
		Hello: channel.HelloRequest{
			Hostname:   hostname,
			Env:        cfg.Env,
			User:       cfg.User,
			WorkingDir: cfg.WorkingDir,
			Network:    GuestNetworkFor(n, hostname, u),
		},
		Network: n,
	}
}

// Paths are where one boot keeps its host-side files.
type Paths struct {
	// WritableDisk is the overlay's upper layer (an ext4 image).
	WritableDisk string
	// RuntimeDir is the backend's private directory (0700, existing).
	RuntimeDir string
	// SerialLog receives the guest console.
	SerialLog string
}

// Options are the microvm.Options that boot m through b with its files at
// p. The VMM dies with the calling process: a run and a supervisor both
// own their VM. Callers add what only their boot has (a RAM file, a
// restore, a boot timeout, kernel arguments).
func (m *Machine) Options(b vmm.Backend, p Paths) microvm.Options {
	return microvm.Options{
		Backend:       b,
		Kernel:        m.Kernel,
		Initrd:        m.Initrd,
		RootDisk:      m.RootDisk,
		WritableDisk:  p.WritableDisk,
		MemoryMiB:     m.MemoryMiB,
		CPUs:          m.CPUs,
		RuntimeDir:    p.RuntimeDir,
		SerialLog:     p.SerialLog,
		Hello:         m.Hello,
		DieWithParent: true,
		Network:       m.Network,
	}
}
