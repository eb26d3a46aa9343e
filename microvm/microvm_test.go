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
	"github.com/microagent-dev/microagent/home"
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
	return kernelOptions(t, h, k, rootDisk)
}

// kernelOptions is options with the kernel k of h.
func kernelOptions(t *testing.T, h home.Home, k *kernel.Kernel, rootDisk string) Options {
	t.Helper()
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

// Kernels packaged as Ubuntu (zstd) and Fedora (xz) package theirs, rebuilt
// from the pinned one, install with "kernel install --deb" and boot: the
// agent loads their modules, which came compressed, and answers.
func TestBootRecompressedKernels(t *testing.T) {
	h := vmenv.VMHome(t)
	pinned, err := kernel.Default(h)
	if err != nil {
		t.Fatal(err)
	}
	var mods, names []string
	for _, m := range pinned.Modules {
		mods = append(mods, pinned.ModulePath(m))
		names = append(names, m.Name)
	}
	reg := testenv.StartRegistry(t)
	disk, err := rootfs.Ensure(context.Background(), h, vmenv.PullForTest(t, h, reg.PushBusybox(t, "busybox")))
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"zstd", "xz"} {
		t.Run(format, func(t *testing.T) {
			deb := testenv.RecompressedKernelDeb(t, format, pinned.Release, pinned.Vmlinux, mods)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			k, err := kernel.Install(ctx, h, kernel.InstallOptions{Name: format, Deb: deb})
			if err != nil {
				t.Fatal(err)
			}
			if err := k.Verify(); err != nil {
				t.Fatal(err)
			}
			vm, err := Boot(ctx, kernelOptions(t, h, k, disk))
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Kill()
			var out bytes.Buffer
			es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{"cat", "/proc/modules"}}, nil, &out, nil)
			if err != nil || es.Code != 0 {
				t.Fatalf("%+v %v", es, err)
			}
			loaded := map[string]bool{}
			for _, line := range strings.Split(out.String(), "\n") {
				if f := strings.Fields(line); len(f) > 0 {
					loaded[f[0]] = true
				}
			}
			for _, n := range names {
				if !loaded[n] {
					t.Errorf("module %s not loaded; /proc/modules:\n%s", n, out.String())
				}
			}
		})
	}
}
