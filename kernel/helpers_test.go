package kernel

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
)

// testLog writes progress lines into the test log.
type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Helper()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var (
	sharedOnce sync.Once
	sharedHome home.Home
	sharedK    *Kernel
	sharedErr  error
	sharedTook time.Duration
	sharedRoot string
)

// sharedKernel installs the default kernel once per test binary into a
// private state dir; tests must not modify it (copy it with copyHome first).
func sharedKernel(t *testing.T) (home.Home, *Kernel) {
	t.Helper()
	testenv.RequireKernelInstall(t, testenv.CacheDir(), DefaultDebSHA256)
	sharedOnce.Do(func() {
		sharedRoot, sharedErr = os.MkdirTemp("", "microagent-kernel-test-")
		if sharedErr != nil {
			return
		}
		sharedHome = home.Home{Root: sharedRoot}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		start := time.Now()
		sharedK, sharedErr = Install(ctx, sharedHome, InstallOptions{CacheDir: testenv.CacheDir(), Stderr: testLog{t}})
		sharedTook = time.Since(start)
	})
	if sharedErr != nil {
		t.Fatalf("install: %v", sharedErr)
	}
	return sharedHome, sharedK
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedRoot != "" {
		os.RemoveAll(sharedRoot)
	}
	os.Exit(code)
}

// copyHome copies the shared install into a fresh state dir the test owns.
func copyHome(t *testing.T, h home.Home, name string) home.Home {
	t.Helper()
	dst := home.Home{Root: t.TempDir()}
	src := h.Path(home.KernelsDir, name)
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := dst.Path(home.KernelsDir, name, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if rel == StampFile {
			// Another test may have verified the shared kernel; its stamp
			// names the originals' inodes and would only confuse tests
			// that watch stamping from the start.
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatalf("copy kernel: %v", err)
	}
	return dst
}

// flipByte inverts one byte of path in place.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
