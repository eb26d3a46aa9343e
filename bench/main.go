// Command bench measures microagent against floors measured in the same run
// and writes the result as a markdown report (docs/performance.md, through
// `make bench`):
//
//  1. a cold `microagent run IMAGE true` (runner.Run, image and root disk
//     cached) against a raw QEMU boot of the same kernel to a trivial /init;
//  2. guestboot.Prepare on a warm store, and the first Prepare for contrast;
//  3. exec round trips of `true` on a booted VM against raw 64-byte echoes
//     over a bare virtio-serial port;
//  4. root disk builds (rootfs.Build, tar2ext4) against tar -x + mkfs.ext4 -d;
//  5. named workspaces: Start of a halted workspace against the raw boot,
//     `exec NAME true` through the CLI, the library and the raw channel, and
//     the host memory of an idle workspace beyond its guest RAM;
//  6. density: how many idle tiny workspaces run side by side, each still
//     answering exec within a second;
//  7. secrets: on-demand fetches from inside the guest against the raw
//     echo, and start-to-ready with 0 versus 100 materialized secrets;
//  8. network: TCP throughput host → guest and guest → host through a
//     published port, against a raw QEMU (same slirp arguments, bare init)
//     and a host loopback TCP pair.
//  9. copy: `microagent cp` throughput both ways against the same bytes
//     streamed through exec stdin/stdout on the same workspace.
//  10. snapshot: pause/resume, snapshot create, restore and fork to
//     exec-ready for small and large guests, against a bare QEMU start
//     with -incoming defer + state load of the same snapshot.
//  11. swap: HTTPS through the secret swap against TLS end to end.
//  12. k8s: a pod created to Running through a real control plane and the
//     microagent node against workspace.Create + Start of the same image,
//     and 20 pods across 2 nodes (skipped when the control plane is not
//     installed: scripts/install-k8s.sh).
//
// -sections selects sections (run = 1-3, rootfs = 4, workspace = 5,
// density = 6, secrets = 7, network = 8, copy = 9, snapshot = 10, swap = 11,
// k8s = 12); the default runs them all.
//
// Everything runs in a temporary state directory; the kernel comes from the
// test suite's .deb cache when there is one (-kernel-cache).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/fsutil"
	"github.com/microagent-dev/microagent/internal/imagebuild"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

type options struct {
	out         string
	n           int
	rttN        int
	execN       int
	rootfsSrc   string
	rootfsMB    int64
	kernelCache string
	keep        bool
	sections    map[string]bool
	wsExecN     int
	densityMax  int
	densityTime time.Duration
	fetchN      int
	secretsN    int
	netConns    int
	netMB       int
	copyMiB     int
	snapMiB     []int
}

// has reports whether section s was selected.
func (o options) has(s string) bool { return o.sections[s] }

func main() {
	var o options
	flag.StringVar(&o.out, "out", "", "write the markdown report to this file (it is printed to stdout either way)")
	flag.IntVar(&o.n, "n", 5, "repetitions of each boot and build measurement")
	flag.IntVar(&o.rttN, "rtt-n", 1000, "raw echo round trips per echo-floor boot")
	flag.IntVar(&o.execN, "exec-n", 200, "exec and hello round trips on the booted VM")
	flag.StringVar(&o.rootfsSrc, "rootfs-src", "/usr/lib", "folder whose files make the large layer of the rootfs build benchmark")
	flag.Int64Var(&o.rootfsMB, "rootfs-mb", 200, "MB of file content in that layer")
	flag.StringVar(&o.kernelCache, "kernel-cache", filepath.Join(os.TempDir(), "microagent-test-cache"),
		"folder of cached kernel .debs (shared with the test suite); empty: download with apt-get")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary state directory")
	sections := flag.String("sections", strings.Join(allSections, ","), "comma-separated sections to run: "+strings.Join(allSections, ", "))
	flag.IntVar(&o.wsExecN, "ws-exec-n", 100, "exec true round trips each through the CLI, the workspace library and the raw channel")
	flag.IntVar(&o.densityMax, "density-max", 32, "density goal: stop after this many running workspaces")
	flag.DurationVar(&o.densityTime, "density-timeout", 5*time.Minute, "bound on the density section's start-and-check loop")
	flag.IntVar(&o.fetchN, "fetch-n", 500, "on-demand secret fetches timed inside the guest")
	flag.IntVar(&o.secretsN, "secrets-n", 100, "materialized secrets in the start-with-secrets measurement")
	flag.IntVar(&o.netMB, "net-mb", 64, "MiB per network transfer (each way, each path, each round)")
	flag.IntVar(&o.netConns, "net-conns", 50, "connections set up per network path and round")
	flag.IntVar(&o.copyMiB, "copy-mib", 64, "MiB of the file the copy section moves")
	snapMiB := flag.String("snap-mib", "256,2048", "comma-separated guest memory sizes (MiB) of the snapshot section")
	flag.Parse()
	for _, f := range strings.Split(*snapMiB, ",") {
		m, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || m < 64 {
			fmt.Fprintf(os.Stderr, "bench: -snap-mib: %q is not a memory size of at least 64 MiB\n", f)
			os.Exit(2)
		}
		o.snapMiB = append(o.snapMiB, m)
	}
	if o.n < 1 || o.rttN < 1 || o.execN < 1 || o.rootfsMB < 1 || o.wsExecN < 1 || o.densityMax < 1 || o.densityTime <= 0 || o.fetchN < 1 || o.secretsN < 1 || o.netMB < 1 || o.netConns < 1 || o.copyMiB < 1 {
		fmt.Fprintln(os.Stderr, "bench: -n, -rtt-n, -exec-n, -rootfs-mb, -ws-exec-n, -density-max, -density-timeout, -fetch-n, -secrets-n, -net-mb, -net-conns and -copy-mib must be positive")
		os.Exit(2)
	}
	o.sections = map[string]bool{}
	for _, s := range strings.Split(*sections, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(allSections, s) {
			fmt.Fprintf(os.Stderr, "bench: -sections: unknown section %q (use %s)\n", s, strings.Join(allSections, ", "))
			os.Exit(2)
		}
		o.sections[s] = true
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		stop()
		os.Exit(1)
	}
}

// results holds everything the report shows.
type results struct {
	opts               options
	startedAt          time.Time
	wall               time.Duration
	host               hostFacts
	floorArgs          []string
	tmp                string
	raw                []*rawBoot
	echo               []*echoBoot
	cold               []*coldRun
	prepWarm           []time.Duration
	prepFirst          []time.Duration
	stepsWarm          []*prepareSteps
	stepsFirst         []*prepareSteps
	channel            *channelResult
	tarSize, tarFiles  int64
	rootfs             []*rootfsRound
	loadStart, loadEnd string
	loadSamples        []float64 // 1-minute load average, sampled per phase
	ws                 *wsResult
	density            *densityResult
	secrets            *secretsResult
	net                *netResult
	copy               *copyResult
	snap               *snapResult
	swap               *swapResult
	k8s                *k8sResult
}

// sampleLoad records the current 1-minute load average.
func (r *results) sampleLoad() {
	var l float64
	if _, err := fmt.Sscan(loadAvg(), &l); err == nil {
		r.loadSamples = append(r.loadSamples, l)
	}
}

// loadRange is the lowest and highest sampled load average.
func (r *results) loadRange() string {
	if len(r.loadSamples) == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.2f-%.2f", slices.Min(r.loadSamples), slices.Max(r.loadSamples))
}

func run(ctx context.Context, o options) error {
	r := &results{opts: o, startedAt: time.Now()}
	r.loadStart = loadAvg()
	r.sampleLoad()
	tmp, err := os.MkdirTemp("", "mabench-")
	if err != nil {
		return err
	}
	r.tmp = tmp
	if o.keep {
		logf("state kept in %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	// Setup: programs, kernel, floor initramfs, image.
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	agent, err := agentBinary(ctx, root, tmp)
	if err != nil {
		return err
	}
	initBin := filepath.Join(tmp, "guestinit")
	logf("building the floor VMs' init")
	if err := buildStatic(ctx, root, "./bench/guestinit", initBin); err != nil {
		return err
	}
	h := home.Home{Root: filepath.Join(tmp, "home")}
	k, err := installKernel(ctx, h, o.kernelCache)
	if err != nil {
		return fmt.Errorf("install the guest kernel: %w", err)
	}
	if err := k.Verify(); err != nil {
		return err
	}
	floorInitrd := filepath.Join(tmp, "floor.cpio")
	if err := writeInitramfs(initBin, k, floorInitrd); err != nil {
		return fmt.Errorf("floor initramfs: %w", err)
	}
	reg := startRegistry()
	defer reg.Close()
	img, err := imagebuild.Busybox()
	if err != nil {
		return err
	}
	ref, err := reg.push(ctx, "bench/busybox", img)
	if err != nil {
		return err
	}
	r.host = gatherHost(k)
	e := &env{
		opts: o, r: r, root: root, tmp: tmp, h: h, reg: reg,
		backend: qemu.New(qemu.Options{}), vmlinux: k.Vmlinux, floorInitrd: floorInitrd,
		ref: ref, agent: agent,
	}
	if err := e.runSelected(ctx); err != nil {
		return err
	}

	r.loadEnd = loadAvg()
	r.sampleLoad()
	r.wall = time.Since(r.startedAt)
	report := render(r)
	fmt.Print(report)
	if o.out != "" {
		if err := writeReport(o.out, report); err != nil {
			return err
		}
		logf("report written to %s", o.out)
	}
	return nil
}

// writeReport replaces path atomically (fsutil.WriteFileAtomic). The
// report is a repository document, so it is world-readable.
func writeReport(path, text string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
