package microvm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/initramfs"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/rootfs"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// options prepares real parts: the test kernel, an initramfs with the agent,
// a writable disk, and the given root disk.
func options(t *testing.T, rootDisk string) Options {
	t.Helper()
	h := vmenv.VMHome(t)
	k, err := kernel.Default(h)
	if err != nil {
		t.Fatal(err)
	}
	initrd, err := initramfs.Ensure(h, vmenv.Agent(t), k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rw := filepath.Join(dir, "rw.ext4")
	if err := rootfs.NewWritableDisk(context.Background(), h, rw, 256<<20); err != nil {
		t.Fatal(err)
	}
	return Options{
		Backend: qemu.New(qemu.Options{}), Kernel: k.Vmlinux, Initrd: initrd,
		RootDisk: rootDisk, WritableDisk: rw, MemoryMiB: 256, CPUs: 1,
		RuntimeDir: dir, SerialLog: filepath.Join(dir, "console.log"), DieWithParent: true,
	}
}

// A failed boot step is reported by the agent with its cause: here the root
// disk is not a filesystem at all.
func TestBootReportsFailedStep(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "garbage.img")
	if err := os.WriteFile(bad, bytes.Repeat([]byte("not ext4 "), 1<<17), 0o600); err != nil {
		t.Fatal(err)
	}
	o := options(t, bad)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := Boot(ctx, o)
	if err == nil {
		vm.Kill()
		t.Fatal("booted from a garbage root disk")
	}
	if !strings.Contains(err.Error(), "the guest failed to boot") || !strings.Contains(err.Error(), "/dev/vda") {
		t.Fatalf("error does not name the failed step: %v", err)
	}
}

// Memory and CPU settings reach the guest.
func TestBootResources(t *testing.T) {
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	ref := reg.PushBusybox(t, "busybox")
	img := vmenv.PullForTest(t, h, ref)
	disk, err := rootfs.Ensure(context.Background(), h, img)
	if err != nil {
		t.Fatal(err)
	}
	o := options(t, disk)
	o.MemoryMiB, o.CPUs = 512, 2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vm, err := Boot(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	var out bytes.Buffer
	es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{"sh", "-c", "nproc; grep MemTotal /proc/meminfo"}}, nil, &out, nil)
	if err != nil || es.Code != 0 {
		t.Fatalf("%+v %v", es, err)
	}
	f := strings.Fields(out.String())
	kb, _ := strconv.Atoi(f[2])
	if f[0] != "2" || kb < 400<<10 || kb > 512<<10 {
		t.Fatalf("guest sees %q", out.String())
	}
	if err := vm.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm.Machine.Done():
	default:
		t.Fatal("VMM still running after Shutdown")
	}
}
