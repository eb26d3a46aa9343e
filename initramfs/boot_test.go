package initramfs

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/kernel"
)

// testKernel installs the real default kernel into a temp state dir, reusing
// the .deb cached by earlier test runs (the kernel package's tests share it).
func testKernel(t *testing.T) *kernel.Kernel {
	t.Helper()
	cache := testenv.CacheDir()
	testenv.RequireKernelInstall(t, cache, kernel.DefaultDebSHA256)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k, err := kernel.Install(ctx, home.Home{Root: t.TempDir()}, kernel.InstallOptions{CacheDir: cache})
	if err != nil {
		t.Fatalf("install kernel: %v", err)
	}
	return k
}

// hostTSCkHz reads the host TSC frequency from /proc/cpuinfo ("cpu MHz");
// under TCG the guest TSC is the host's, and microvm needs it given
// (tsc_early_khz) or boots can hang calibrating against a missing timer.
func hostTSCkHz(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skipf("no /proc/cpuinfo: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil && mhz > 0 {
				return int(mhz * 1000)
			}
		}
	}
	t.Skip("no cpu MHz in /proc/cpuinfo")
	return 0
}

type bootResult struct {
	marks  map[string]time.Duration // first time each SMOKE_ line appeared
	lines  map[string]string        // the SMOKE_ lines themselves
	exited time.Duration
	cpu    time.Duration // QEMU's user+system CPU time: the emulation work, less noisy than wall time on a busy host
	output string
}

// boot runs the smoke-test VM and returns when QEMU exits (the stand-in
// agent reboots, which ends QEMU under -no-reboot) or the timeout hits.
func boot(t *testing.T, vmlinux, initrd string) bootResult {
	t.Helper()
	qemu := testenv.RequireTool(t, "qemu-system-x86_64")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-M", "microvm", "-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1",
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", vmlinux, "-initrd", initrd,
		"-append", fmt.Sprintf("console=ttyS0 quiet tsc_early_khz=%d tsc=reliable", hostTSCkHz(t)))
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	res := bootResult{marks: map[string]time.Duration{}, lines: map[string]string{}}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	var out strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			out.WriteString(line + "\n")
			if i := strings.Index(line, "SMOKE_"); i >= 0 {
				word := strings.Fields(line[i:])[0]
				if _, ok := res.marks[word]; !ok {
					res.marks[word] = time.Since(start)
					res.lines[word] = line[i:]
				}
			}
		}
	}()
	wg.Wait()
	err = cmd.Wait()
	res.exited = time.Since(start)
	if cmd.ProcessState != nil {
		res.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	res.output = out.String()
	if ctx.Err() != nil {
		t.Fatalf("VM did not finish within the timeout; console:\n%s\nqemu stderr: %s", res.output, errb.String())
	}
	if err != nil {
		t.Fatalf("qemu: %v; console:\n%s\nqemu stderr: %s", err, res.output, errb.String())
	}
	return res
}

// TestBootSmoke boots the real kernel with an Ensure'd initramfs: the
// stand-in agent must run as /init, load every module in order, see
// /dev/console as 5,1 and reboot.
func TestBootSmoke(t *testing.T) {
	testenv.RequireTool(t, "qemu-system-x86_64")
	k := testKernel(t)
	if err := k.Verify(); err != nil {
		t.Fatal(err)
	}
	h := home.Home{Root: t.TempDir()}
	initrd, err := Ensure(h, testAgent(t, ""), k)
	if err != nil {
		t.Fatal(err)
	}
	res := boot(t, k.Vmlinux, initrd)
	if fail, ok := res.lines["SMOKE_FAIL"]; ok {
		t.Fatalf("guest: %s\nconsole:\n%s", fail, res.output)
	}
	var names []string
	for _, m := range k.Modules {
		names = append(names, m.Name)
	}
	want := "SMOKE_MODULES_LOADED " + strings.Join(names, ",") + " console=5,1"
	if got := res.lines["SMOKE_MODULES_LOADED"]; got != want {
		t.Fatalf("guest said %q, want %q\nconsole:\n%s", got, want, res.output)
	}
	drivers := res.lines["SMOKE_VIRTIO_DRIVERS"]
	for _, d := range []string{"virtio_blk", "virtio_console", "virtio_net"} {
		if !strings.Contains(drivers, d) {
			t.Errorf("virtio driver %s not registered: %q", d, drivers)
		}
	}
	t.Logf("init at %s, modules loaded at %s, qemu exited at %s",
		res.marks["SMOKE_INIT_STARTED"].Round(time.Millisecond), res.marks["SMOKE_MODULES_LOADED"].Round(time.Millisecond),
		res.exited.Round(time.Millisecond))
}

// TestMeasureCompression compares boot times with a plain and a gzipped
// initramfs holding a ~5 MB agent. It takes a minute, so it runs only with
// MICROAGENT_MEASURE=1; its result chose Ext.
func TestMeasureCompression(t *testing.T) {
	if os.Getenv("MICROAGENT_MEASURE") != "1" {
		t.Skip("set MICROAGENT_MEASURE=1 to measure")
	}
	k := testKernel(t)
	agent := testAgent(t, "bloat")
	dir := t.TempDir()
	plain := filepath.Join(dir, "initrd.cpio")
	gz := filepath.Join(dir, "initrd.cpio.gz")
	f, _ := os.Create(plain)
	if err := Build(f, agent, k); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for level, name := range map[int]string{gzip.DefaultCompression: gz, gzip.BestSpeed: gz + "1"} {
		f, _ = os.Create(name)
		zw, _ := gzip.NewWriterLevel(f, level)
		if err := Build(zw, agent, k); err != nil {
			t.Fatal(err)
		}
		zw.Close()
		f.Close()
	}
	n := 7
	if s := os.Getenv("MICROAGENT_MEASURE_RUNS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	variants := []string{plain, gz, gz + "1"}
	times := map[string][]time.Duration{}
	exits := map[string][]time.Duration{}
	cpus := map[string][]time.Duration{}
	for i := 0; i < n; i++ {
		for _, v := range variants { // interleaved, so host noise hits all alike
			res := boot(t, k.Vmlinux, v)
			if _, ok := res.marks["SMOKE_MODULES_LOADED"]; !ok {
				t.Fatalf("%s: no marker\n%s", v, res.output)
			}
			times[v] = append(times[v], res.marks["SMOKE_MODULES_LOADED"])
			exits[v] = append(exits[v], res.exited)
			cpus[v] = append(cpus[v], res.cpu)
		}
	}
	for _, v := range variants {
		fi, _ := os.Stat(v)
		sort.Slice(times[v], func(i, j int) bool { return times[v][i] < times[v][j] })
		sort.Slice(exits[v], func(i, j int) bool { return exits[v][i] < exits[v][j] })
		sort.Slice(cpus[v], func(i, j int) bool { return cpus[v][i] < cpus[v][j] })
		t.Logf("%-16s %5.2f MB  marker min/median %s/%s  exit min/median %s/%s  qemu cpu min/median %s/%s",
			filepath.Base(v), float64(fi.Size())/1e6,
			times[v][0].Round(time.Millisecond), times[v][n/2].Round(time.Millisecond),
			exits[v][0].Round(time.Millisecond), exits[v][n/2].Round(time.Millisecond),
			cpus[v][0].Round(time.Millisecond), cpus[v][n/2].Round(time.Millisecond))
	}
}
