package qemu

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/pierrec/lz4/v4"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/usernet"
)

// The test guest: Debian's cloud kernel (vmlinux extracted from the
// LZ4 bzImage, booted through PVH) and an initramfs holding the virtio
// modules and testdata/guestinit as /init.
const (
	kernelPkg    = kernel.DefaultPackage
	kernelPkgVer = kernel.DefaultVersion
)

var kernelRelease = strings.TrimPrefix(kernel.DefaultPackage, "linux-image-")

var guestModules = []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_console", "virtio_blk"}

func requireQEMU(t testing.TB) {
	t.Helper()
	testenv.RequireTool(t, DefaultBinary)
}

// guestFiles is built once per test process.
var (
	guestOnce   sync.Once
	guestKernel string
	guestInitrd string
	guestErr    error
	guestSkip   string
	guestDir    string // removed by TestMain
)

// testGuest returns the kernel and initramfs of the test guest.
func testGuest(t testing.TB) (kernel, initrd string) {
	t.Helper()
	requireQEMU(t)
	if k, i := os.Getenv("MICROAGENT_TEST_KERNEL"), os.Getenv("MICROAGENT_TEST_INITRD"); k != "" && i != "" {
		return k, i // the DieWithParent child gets them from its parent
	}
	guestOnce.Do(func() {
		for _, tool := range []string{"apt-get", "dpkg-deb", "go"} {
			if testenv.LookTool(tool) == "" {
				guestSkip = tool + " not installed"
				return
			}
		}
		guestKernel, guestInitrd, guestErr = buildGuest()
	})
	if guestSkip != "" {
		testenv.SkipOrFail(t, "%s", guestSkip)
	}
	if guestErr != nil {
		t.Fatalf("building the test guest: %v", guestErr)
	}
	return guestKernel, guestInitrd
}

func buildGuest() (string, string, error) {
	start := time.Now()
	kdir := filepath.Join(testenv.CacheDir(), kernelRelease)
	vmlinux := filepath.Join(kdir, "vmlinux")
	if !cached(kdir) {
		if err := fillKernelCache(kdir); err != nil {
			return "", "", err
		}
	}
	initBin := filepath.Join(guestDir, "init")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, "./testdata/guestinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building guest init: %v\n%s", err, out)
	}
	initrd := filepath.Join(guestDir, "initrd.cpio")
	if err := writeInitramfs(initrd, initBin, kdir); err != nil {
		return "", "", err
	}
	fmt.Fprintf(os.Stderr, "test guest ready in %v\n", time.Since(start).Round(time.Millisecond))
	return vmlinux, initrd, nil
}

func cached(kdir string) bool {
	names := []string{"vmlinux"}
	for _, m := range guestModules {
		names = append(names, m+".ko")
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(kdir, n)); err != nil {
			return false
		}
	}
	return true
}

// fillKernelCache downloads the kernel package (once) and writes vmlinux
// and the needed modules into kdir, each file atomically.
func fillKernelCache(kdir string) error {
	if err := os.MkdirAll(kdir, 0o700); err != nil {
		return err
	}
	deb := filepath.Join(testenv.CacheDir(), fmt.Sprintf("%s_%s_amd64.deb", kernelPkg, kernelPkgVer))
	if _, err := os.Stat(deb); err != nil {
		dl, err := os.MkdirTemp(testenv.CacheDir(), "download-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dl)
		cmd := exec.Command("apt-get", "download", kernelPkg+"="+kernelPkgVer)
		cmd.Dir = dl
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get download %s=%s: %v\n%s", kernelPkg, kernelPkgVer, err, out)
		}
		if err := os.Chmod(filepath.Join(dl, filepath.Base(deb)), 0o600); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(dl, filepath.Base(deb)), deb); err != nil {
			return err
		}
	}
	// Stream the package's file tree instead of unpacking all 90 MB.
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	want := map[string]bool{}
	for _, m := range guestModules {
		want[m+".ko"] = true
	}
	tr := tar.NewReader(out)
	found := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading %s: %v (%s)", deb, err, stderr.String())
		}
		base := filepath.Base(h.Name)
		switch {
		case h.Name == "./boot/vmlinuz-"+kernelRelease:
			bz, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			elf, err := extractVmlinux(bz)
			if err != nil {
				return err
			}
			if err := writeAtomic(filepath.Join(kdir, "vmlinux"), elf); err != nil {
				return err
			}
			found++
		case want[base] && strings.Contains(h.Name, "/kernel/drivers/"):
			data, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			if err := writeAtomic(filepath.Join(kdir, base), data); err != nil {
				return err
			}
			found++
		}
	}
	io.Copy(io.Discard, out)
	if found != 1+len(guestModules) {
		return fmt.Errorf("%s: found %d of the %d needed files", deb, found, 1+len(guestModules))
	}
	return nil
}

// extractVmlinux decompresses the LZ4 (legacy frame) payload of a bzImage.
func extractVmlinux(bz []byte) ([]byte, error) {
	i := bytes.Index(bz, []byte{0x02, 0x21, 0x4c, 0x18})
	if i < 0 {
		return nil, errors.New("bzImage: no LZ4 payload (magic 02 21 4c 18)")
	}
	var out bytes.Buffer
	_, err := io.Copy(&out, lz4.NewReader(bytes.NewReader(bz[i:])))
	elf := out.Bytes()
	if len(elf) < 4 || string(elf[:4]) != "\x7fELF" {
		return nil, fmt.Errorf("bzImage: LZ4 payload is not an ELF vmlinux (%v)", err)
	}
	// Trailing bytes after the last LZ4 block may fail to parse; the ELF
	// is complete by then.
	return elf, nil
}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// writeInitramfs writes an uncompressed newc cpio (no decompression cost
// under TCG) with /init, the modules and the mount points.
func writeInitramfs(path, initBin, kdir string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	w := cpio.NewWriter(f)
	for _, d := range []string{"dev", "proc", "sys", "lib", "lib/modules"} {
		if err := w.WriteHeader(&cpio.Header{Name: d, Mode: cpio.TypeDir | 0o755}); err != nil {
			return err
		}
	}
	add := func(name, src string, mode cpio.FileMode) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := w.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeReg | mode, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	if err := add("init", initBin, 0o755); err != nil {
		return err
	}
	for _, m := range guestModules {
		if err := add("lib/modules/"+m+".ko", filepath.Join(kdir, m+".ko"), 0o644); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(dieWithParentChild())
	}
	var err error
	if guestDir, err = os.MkdirTemp("", "qemu-test-guest-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := ensureNetHelper(guestDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(guestDir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(guestDir)
	os.Exit(code)
}

// ensureNetHelper builds the network helper into dir and points
// $MICROAGENT_NET at it when the usual lookup finds none (go test without
// make build's $MICROAGENT_AGENT): every user-network test needs it, and
// the child processes inherit the variable.
func ensureNetHelper(dir string) error {
	if _, err := usernet.FindHelper(""); err == nil {
		return nil
	}
	if testenv.LookTool("go") == "" {
		return nil // the tests that need it fail with the lookup's message
	}
	// Its own directory, searchable by all: started by root, the helper
	// runs as nobody, and dir is private.
	dir = filepath.Join(dir, "net")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		return err
	}
	out := filepath.Join(dir, usernet.BinaryName)
	cmd := exec.Command("go", "build", "-o", out, "github.com/microagent-dev/microagent/cmd/microagent-net")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the network helper: %v: %s", err, b)
	}
	return os.Setenv(usernet.EnvVar, out)
}

// testVM is a started test guest with its host ends.
type testVM struct {
	m      *Machine
	serial string
	start  time.Time
	conn   net.Conn
}

// startVM boots the test guest; edit may adjust the config.
func startVM(t testing.TB, edit func(*MachineConfig)) *testVM {
	t.Helper()
	kernel, initrd := testGuest(t)
	dir := t.TempDir()
	mc := MachineConfig{Config: vmm.Config{
		Kernel:      kernel,
		Initrd:      initrd,
		Cmdline:     "testport=test.port",
		MemoryMiB:   256,
		CPUs:        1,
		ChannelName: "test.port",
		SerialLog:   filepath.Join(dir, "serial.log"),
		RuntimeDir:  filepath.Join(dir, "run"),
	}}
	if edit != nil {
		edit(&mc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	m, err := New(Options{}).StartWith(ctx, mc)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		m.Kill()
		if t.Failed() {
			log, _ := os.ReadFile(mc.SerialLog)
			t.Logf("serial log:\n%s", log)
		}
	})
	return &testVM{m: m, serial: mc.SerialLog, start: start}
}

// waitSerial polls the serial log (bounded) until it holds marker, and
// returns the time since QEMU was started.
func (v *testVM) waitSerial(t testing.TB, marker string, timeout time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		data, _ := os.ReadFile(v.serial)
		if bytes.Contains(data, []byte(marker)) {
			return time.Since(v.start)
		}
		if bytes.Contains(data, []byte("GUEST_FAIL")) {
			t.Fatalf("guest failed:\n%s", data)
		}
		select {
		case <-v.m.Done():
			t.Fatalf("qemu exited before %q: %v\nserial:\n%s", marker, v.m.Wait(), data)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q on the serial console after %v; serial:\n%s", marker, timeout, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// echo sends msg over the agent channel and checks it comes back.
func (v *testVM) echo(t testing.TB, msg string) {
	t.Helper()
	if v.conn == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := v.m.DialAgent(ctx)
		cancel()
		if err != nil {
			t.Fatalf("connecting to the agent channel: %v", err)
		}
		v.conn = c
		t.Cleanup(func() { c.Close() })
	}
	v.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(v.conn, msg); err != nil {
		t.Fatalf("channel write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(v.conn, got); err != nil {
		t.Fatalf("channel read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}
