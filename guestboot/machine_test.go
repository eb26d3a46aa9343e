package guestboot

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/vmm"
)

// TestMachineOptions: the hello carries the image's Env, User and
// WorkingDir, the hostname and the network's guest setup, and the options
// boot the parts with the VMM tied to the caller.
func TestMachineOptions(t *testing.T) {
	p := &Parts{
		Image:     &image.Image{Config: image.Config{Env: []string{"A=1"}, User: "1000", WorkingDir: "/w"}},
		RootDisk:  "/root.ext4",
		Kernel:    &kernel.Kernel{Vmlinux: "/vmlinux"},
		Initramfs: "/initrd",
	}
	n := &vmm.Network{}
	m := p.Machine(Resources{MemoryMiB: 128, CPUs: 2}, "box", n, vmm.UserNetwork{Provider: "passt", Outbound: true})
	h := m.Hello
	if h.Hostname != "box" || !slices.Equal(h.Env, []string{"A=1"}) || h.User != "1000" || h.WorkingDir != "/w" {
		t.Fatalf("hello: %+v", h)
	}
	if h.Network == nil || h.Network.Interface != "eth0" || !slices.Equal(h.Network.DNS, []string{"10.0.2.3"}) {
		t.Fatalf("hello network: %+v", h.Network)
	}
	o := m.Options(nil, Paths{WritableDisk: "/rw", RuntimeDir: "/run", SerialLog: "/console"})
	if o.Kernel != "/vmlinux" || o.Initrd != "/initrd" || o.RootDisk != "/root.ext4" || o.WritableDisk != "/rw" ||
		o.MemoryMiB != 128 || o.CPUs != 2 || o.RuntimeDir != "/run" || o.SerialLog != "/console" ||
		!o.DieWithParent || o.Network != n || o.Hello.Hostname != "box" {
		t.Fatalf("options: %+v", o)
	}
	// The boot plan embeds a Machine: its JSON names are the plan's.
	b, _ := json.Marshal(m)
	var fields map[string]json.RawMessage
	json.Unmarshal(b, &fields)
	for _, k := range []string{"kernel", "initrd", "rootDisk", "memoryMiB", "cpus", "hello", "network"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("JSON has no %q: %s", k, b)
		}
	}
}
