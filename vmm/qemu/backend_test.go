package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/vmm"
)

// The optional interfaces callers rely on.
var (
	_ vmm.Identifier       = (*Backend)(nil)
	_ vmm.ProcessOwner     = (*Backend)(nil)
	_ vmm.HostChecker      = (*Backend)(nil)
	_ vmm.UserNetworker    = (*Backend)(nil)
	_ vmm.ShutdownReasoner = (*Machine)(nil)
	_ vmm.IdentityReporter = (*Machine)(nil)
	_ vmm.Snapshotter      = (*Machine)(nil)
)

// The package registers itself, and as the only backend linked in it is
// the default.
func TestRegistered(t *testing.T) {
	b, err := vmm.Lookup(BackendName)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.(*Backend); !ok || b.Name() != BackendName {
		t.Errorf("Lookup(%q) = %T named %q", BackendName, b, b.Name())
	}
	if d, err := vmm.Default(); err != nil || d.Name() != BackendName {
		t.Errorf("Default() = %v, %v", d, err)
	}
	if _, err := vmm.Lookup("firecracker"); err == nil || !strings.Contains(err.Error(), "the only registered one is qemu") {
		t.Errorf("Lookup of an unknown backend: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering qemu twice did not panic")
		}
	}()
	vmm.Register(BackendName, func() vmm.Backend { return New(Options{}) })
}

// Identity's strings are the ones snapshots recorded before there was an
// Identity: they must never change.
func TestIdentity(t *testing.T) {
	old := cpuinfoPath
	t.Cleanup(func() { cpuinfoPath = old })
	cpuinfoPath = filepath.Join(t.TempDir(), "cpuinfo")
	os.WriteFile(cpuinfoPath, []byte("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t\t: fpu vmx\n"), 0o600)
	workspace := vmm.Config{Disks: make([]vmm.Disk, 2), ChannelName: "agent", Network: &vmm.Network{}}
	isolated := workspace
	isolated.Network = &vmm.Network{Mode: vmm.NetworkIsolated}
	for _, c := range []struct {
		accel string
		cfg   vmm.Config
		want  vmm.Identity
	}{
		{AccelTCG, workspace, vmm.Identity{Backend: "qemu", Accel: "tcg", CPU: "max", Devices: "virtio-blk:2,virtio-serial:1,virtio-net:1"}},
		{AccelKVM, isolated, vmm.Identity{Backend: "qemu", Accel: "kvm", CPU: "host: Intel(R) Xeon(R) CPU @ 2.20GHz", Devices: "virtio-blk:2,virtio-serial:1"}},
		{AccelTCG, vmm.Config{Disks: make([]vmm.Disk, 1)}, vmm.Identity{Backend: "qemu", Accel: "tcg", CPU: "max", Devices: "virtio-blk:1"}},
	} {
		got, err := New(Options{Accel: c.accel}).Identity(c.cfg)
		if err != nil || got != c.want {
			t.Errorf("Identity(%s, %+v) = %+v, %v; want %+v", c.accel, c.cfg, got, err, c.want)
		}
	}
	os.WriteFile(cpuinfoPath, []byte("processor\t: 0\n"), 0o600)
	if got, _ := New(Options{Accel: AccelKVM}).Identity(workspace); got.CPU != "host" {
		t.Errorf("CPU without a model name: %q, want host", got.CPU)
	}
	if _, err := New(Options{Accel: "hvf"}).Identity(workspace); err == nil {
		t.Error("Identity with an unknown accelerator: no error")
	}
	// With no accelerator set, the identity is the one Start would detect.
	t.Setenv(AccelEnv, AccelTCG)
	if got, _ := New(Options{}).Identity(workspace); got.Accel != AccelTCG {
		t.Errorf("detected accelerator %q, want tcg (%s)", got.Accel, AccelEnv)
	}
}

// A QEMU is recognised by its program's name and a file of the folder in
// its arguments, whether a path or inside an option.
func TestOwnsProcess(t *testing.T) {
	const dir = "/h/workspaces/app"
	b := New(Options{})
	for _, c := range []struct {
		argv []string
		want bool
	}{
		{[]string{"/usr/bin/qemu-system-x86_64", "-drive", "id=d1,file=/h/workspaces/app/disk.ext4,format=raw"}, true},
		{[]string{"qemu-system-x86_64", "-chardev", "file,id=serial0,path=/h/workspaces/app/console.log"}, true},
		{[]string{"qemu-system-x86_64", "-object", "x,mem-path=/h/workspaces/app,share=on"}, true},
		{[]string{"qemu-system-x86_64", "-drive", "file=/h/workspaces/app2/disk.ext4"}, false},
		{[]string{"qemu-system-x86_64", "-drive", "file=/h/workspaces/other/disk.ext4"}, false},
		{[]string{"/usr/bin/tail", "-f", "/h/workspaces/app/console.log"}, false},
		{[]string{"microagent", "--state-dir", "/h", "supervise", "app"}, false},
		{nil, false},
	} {
		if got := b.OwnsProcess(c.argv, dir); got != c.want {
			t.Errorf("OwnsProcess(%q) = %v, want %v", c.argv, got, c.want)
		}
	}
	if name, ok := vmm.ProcessBackend([]string{"qemu-system-x86_64", "file=/h/workspaces/app/disk"}, dir); !ok || name != BackendName {
		t.Errorf("ProcessBackend = %q, %v", name, ok)
	}
}

// The host checks name QEMU's version or its absence (fatal), the
// accelerator, and the user network's provider.
func TestHostChecks(t *testing.T) {
	ctx := context.Background()
	missing := New(Options{Binary: "/no/such/qemu-system-x86_64", Accel: AccelTCG, UserNet: UserNetSlirp}).HostChecks(ctx)
	names := []string{}
	for _, c := range missing {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "qemu,accelerator,user network" {
		t.Fatalf("checks %q", names)
	}
	if c := missing[0]; c.OK || !c.Fatal || !strings.Contains(c.Detail, "not found") || !strings.Contains(c.Fix, "qemu-system-x86") {
		t.Errorf("missing QEMU: %+v", c)
	}
	if c := missing[1]; !c.OK || !strings.HasPrefix(c.Detail, "tcg (software emulation") || c.Fix == "" {
		t.Errorf("TCG: %+v", c)
	}
	if c := missing[2]; c.OK || c.Fatal || c.Detail != SlirpFallback {
		t.Errorf("slirp: %+v", c)
	}
	if _, err := Version(""); err != nil {
		t.Skipf("no QEMU here: %v", err)
	}
	if c := New(Options{}).HostChecks(ctx)[0]; !c.OK || !strings.Contains(c.Detail, DefaultBinary+" ") {
		t.Errorf("installed QEMU: %+v", c)
	}
}
