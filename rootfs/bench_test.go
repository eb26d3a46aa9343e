package rootfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
)

// The benchmarks compare building a root disk from one tar (the Go
// installation, ~270 MB in ~15k files) with tar2ext4 and with the classic
// `tar -x` + `mkfs.ext4 -d`. Run them with
//
//	go test -run XXX -bench . -benchtime 3x ./rootfs/
var (
	benchTarOnce sync.Once
	benchTar     string
	benchTarSize int64
	benchTarErr  error
)

func goTar(b *testing.B) (string, int64) {
	b.Helper()
	benchTarOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rootfs-bench-")
		if err != nil {
			benchTarErr = err
			return
		}
		benchTar = filepath.Join(dir, "go.tar")
		out, err := exec.Command("tar", "-cf", benchTar, "-C", runtime.GOROOT(), ".").CombinedOutput()
		if err != nil {
			benchTarErr = err
			b.Logf("tar: %s", out)
			return
		}
		fi, err := os.Stat(benchTar)
		if err == nil {
			benchTarSize = fi.Size()
		}
		benchTarErr = err
	})
	if benchTarErr != nil {
		b.Fatal(benchTarErr)
	}
	return benchTar, benchTarSize
}

func BenchmarkTar2ext4(b *testing.B) {
	src, size := goTar(b)
	dir := b.TempDir()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_ = os.Remove(filepath.Join(dir, "out.ext4"))
		_ = exec.Command("sync").Run()
		b.StartTimer()
		in, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dir, "out.ext4"))
		if err != nil {
			b.Fatal(err)
		}
		if err := tar2ext4.ConvertTarToExt4(in, out, tar2ext4.MaximumDiskSize(maxRootDisk)); err != nil {
			b.Fatal(err)
		}
		if err := out.Sync(); err != nil {
			b.Fatal(err)
		}
		in.Close()
		out.Close()
	}
}

func BenchmarkTarXMkfsD(b *testing.B) {
	mkfs := testenv.RequireTool(b, "mkfs.ext4")
	src, size := goTar(b)
	dir := b.TempDir()
	b.SetBytes(size)
	var tarX, mkfsD, syncT time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tree := filepath.Join(dir, "tree")
		_ = os.RemoveAll(tree)
		if err := os.Mkdir(tree, 0o700); err != nil {
			b.Fatal(err)
		}
		img := filepath.Join(dir, "out.ext4")
		_ = os.Remove(img)
		_ = exec.Command("sync").Run()
		b.StartTimer()
		t0 := time.Now()
		if out, err := exec.Command("tar", "-xf", src, "-C", tree).CombinedOutput(); err != nil {
			b.Fatalf("tar -x: %v: %s", err, out)
		}
		tarX += time.Since(t0)
		t0 = time.Now()
		// Size the image like a user would: content plus headroom.
		if out, err := exec.Command(mkfs, "-q", "-F", "-d", tree, img, "600M").CombinedOutput(); err != nil {
			b.Fatalf("mkfs.ext4 -d: %v: %s", err, out)
		}
		mkfsD += time.Since(t0)
		t0 = time.Now()
		if out, err := exec.Command("sync", img).CombinedOutput(); err != nil {
			b.Fatalf("sync: %v: %s", err, out)
		}
		syncT += time.Since(t0)
	}
	b.ReportMetric(tarX.Seconds()/float64(b.N), "tar-x-s/op")
	b.ReportMetric(mkfsD.Seconds()/float64(b.N), "mkfs-d-s/op")
	b.ReportMetric(syncT.Seconds()/float64(b.N), "sync-s/op")
}

func BenchmarkNewWritableDisk1G(b *testing.B) {
	testenv.RequireTool(b, "mkfs.ext4")
	h := home.Home{Root: b.TempDir()}
	dir := b.TempDir()
	ctx := context.Background()
	if err := NewWritableDisk(ctx, h, filepath.Join(dir, "warm.img"), 1<<30); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := filepath.Join(dir, "d.img")
		_ = os.Remove(p)
		if err := NewWritableDisk(ctx, h, p, 1<<30); err != nil {
			b.Fatal(err)
		}
	}
}
