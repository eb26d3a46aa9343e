// Package vmenv provides what VM tests need beyond internal/testenv: a state
// directory with a verified kernel, the guest agent, and a pulled image. It is
// separate from testenv so that the image and kernel packages' own tests can
// use testenv without an import cycle.
package vmenv

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/internal/agentbuild"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/kernel"
)

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

// Agent returns a guest agent binary: $MICROAGENT_AGENT when set (make test
// sets it to bin/microagent-agent), else one built once per test process.
func Agent(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MICROAGENT_AGENT"); p != "" {
		return p
	}
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "microagent-agent-")
		if err != nil {
			agentErr = err
			return
		}
		agentPath = filepath.Join(dir, "microagent-agent")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..", "..") // the module root
		agentErr = agentbuild.Build(context.Background(), root, agentbuild.Package, agentPath)
	})
	if agentErr != nil {
		t.Fatalf("build the guest agent: %v", agentErr)
	}
	return agentPath
}

// VMHome returns a fresh state directory with the default kernel installed,
// for tests that boot VMs. The kernel is installed once into a shared cache
// (under a lock, so parallel test processes agree) and hard-linked in, so
// each test starts from a clean state without paying for an install. It
// skips (or fails under CI) when QEMU is missing.
func VMHome(t testing.TB) home.Home {
	t.Helper()
	testenv.RequireTool(t, "qemu-system-x86_64")
	testenv.RequireTool(t, "mkfs.ext4")
	shared := home.Home{Root: filepath.Join(testenv.CacheDir(), "kernel-home")}
	if err := os.MkdirAll(shared.Root, 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(testenv.CacheDir(), "kernel-home.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	k, err := kernel.Load(shared, kernel.DefaultName)
	if err != nil || k.Verify() != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		k, err = kernel.Install(ctx, shared, kernel.InstallOptions{Force: true, CacheDir: testenv.CacheDir()})
		if err != nil {
			testenv.SkipOrFail(t, "install the test kernel: %v", err)
		}
	}
	h := home.Home{Root: t.TempDir()}
	dst := h.Path(home.KernelsDir, k.Name)
	err = filepath.Walk(k.Dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(k.Dir, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		return os.Link(p, target)
	})
	if err != nil {
		t.Fatalf("link the test kernel: %v", err)
	}
	return h
}

// PullForTest pulls ref into h's image store.
func PullForTest(t testing.TB, h home.Home, ref string) *image.Image {
	t.Helper()
	s, err := image.OpenStore(h)
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Pull(context.Background(), ref, image.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return img
}
