package guestboot

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/internal/testenv/vmenv"
	"github.com/microagent-dev/microagent/kernel"
)

func TestRootDiskBuiltOnce(t *testing.T) {
	h := vmenv.VMHome(t)
	reg := testenv.StartRegistry(t)
	ref := reg.PushBusybox(t, "busybox")
	p1, err := Prepare(context.Background(), h, PrepareOptions{Image: ref, Agent: vmenv.Agent(t)})
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(p1.RootDisk)
	reg.Stop() // the second prepare needs no registry
	p2, err := Prepare(context.Background(), h, PrepareOptions{Image: ref, Agent: vmenv.Agent(t)})
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(p2.RootDisk)
	if p1.RootDisk != p2.RootDisk || !st1.ModTime().Equal(st2.ModTime()) {
		t.Fatal("root disk rebuilt on the second prepare")
	}
}

// A disk that fills up while the root disk is built is a real ENOSPC from a
// small tmpfs: the error says so, and no half-built disk is left.
func TestPrepareDiskFull(t *testing.T) {
	testenv.RequireRoot(t, "this test mounts a small tmpfs")
	shared := vmenv.VMHome(t) // for a verified kernel outside the small disk
	k, err := kernel.Default(shared)
	if err != nil {
		t.Fatal(err)
	}
	reg := testenv.StartRegistry(t)
	ref := reg.PushBusybox(t, "busybox")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1700k,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	h := home.Home{Root: dir}
	_, err = Prepare(context.Background(), h, PrepareOptions{Image: ref, KernelPath: k.Vmlinux, Agent: vmenv.Agent(t)})
	if err == nil || !errors.Is(err, syscall.ENOSPC) && !strings.Contains(err.Error(), "no space") {
		t.Fatalf("want a disk-full error, got %v", err)
	}
	t.Log(err)
	ents, _ := os.ReadDir(h.Path(home.RootfsDir))
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".ext4") {
			t.Fatalf("half-built root disk left: %s", e.Name())
		}
	}
}

// TestUserKernelByName: --kernel names an installed kernel when no file of
// that name is there; a file wins over a name, and a name that is neither
// fails as a missing file does.
func TestUserKernelByName(t *testing.T) {
	h := vmenv.VMHome(t)
	want, err := kernel.Load(h, kernel.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	k, err := userKernel(h, kernel.DefaultName)
	if err != nil || k.VmlinuxSHA256 != want.VmlinuxSHA256 || len(k.Modules) != len(want.Modules) {
		t.Fatalf("by name: %+v, %v", k, err)
	}
	if _, err := userKernel(h, "no-such-kernel"); err == nil {
		t.Fatal("a name that is neither a file nor an installed kernel was taken")
	}
	if err := os.Symlink(want.Vmlinux, kernel.DefaultName); err != nil {
		t.Fatal(err)
	}
	if k, err := userKernel(h, kernel.DefaultName); err != nil || len(k.Modules) != 0 {
		t.Fatalf("a file of that name: %+v, %v (want the file, without modules)", k, err)
	}
}
