// Command bench measures microagent against floors measured in the same run
// and writes the result as a markdown report (docs/performance.md, through
// `make bench`):
//
//  1. a cold `microagent run IMAGE true` (runner.Run, image and root disk
//     cached) against a raw QEMU boot of the same kernel to a trivial /init;
//  2. runner.Prepare on a warm store, and the first Prepare for contrast;
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
//
// -sections selects sections (run = 1-3, rootfs = 4, workspace = 5,
// density = 6, secrets = 7, network = 8, copy = 9, snapshot = 10); the
// default runs them all.
//
// Everything runs in a temporary state directory; the kernel comes from the
// test suite's .deb cache when there is one (-kernel-cache).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
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
	netMB       int
	copyMiB     int
	snapMiB     []int
}

// allSections are the -sections names, in report order.
var allSections = []string{"run", "rootfs", "workspace", "density", "secrets", "network", "copy", "snapshot"}

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
	if o.n < 1 || o.rttN < 1 || o.execN < 1 || o.rootfsMB < 1 || o.wsExecN < 1 || o.densityMax < 1 || o.densityTime <= 0 || o.fetchN < 1 || o.secretsN < 1 || o.netMB < 1 || o.copyMiB < 1 {
		fmt.Fprintln(os.Stderr, "bench: -n, -rtt-n, -exec-n, -rootfs-mb, -ws-exec-n, -density-max, -density-timeout, -fetch-n, -secrets-n, -net-mb and -copy-mib must be positive")
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
	backend := qemu.New(qemu.Options{})
	r.host = gatherHost(k)
	vmDir := func() (string, error) { return os.MkdirTemp(tmp, "vm-") }

	if o.has("run") {
		if err := runSections123(ctx, r, h, backend, k.Vmlinux, floorInitrd, ref, agent, vmDir); err != nil {
			return err
		}
	}
	if o.has("secrets") {
		// The busybox image plus the fetch client, in its own repository
		// so that the other sections' image stays as it was.
		client, err := secretsClientBinary(ctx, root, tmp)
		if err != nil {
			return err
		}
		simg, err := secretsImage(client)
		if err != nil {
			return fmt.Errorf("secrets image: %w", err)
		}
		sref, err := reg.push(ctx, "bench/busybox-secrets", simg)
		if err != nil {
			return err
		}
		if err := runSecretsSection(ctx, r, h, backend, k.Vmlinux, floorInitrd, sref, agent, vmDir); err != nil {
			return err
		}
	}
	if o.has("network") {
		srv, err := netServerBinary(ctx, root, tmp)
		if err != nil {
			return err
		}
		nimg, err := netImage(srv)
		if err != nil {
			return fmt.Errorf("network image: %w", err)
		}
		nref, err := reg.push(ctx, "bench/busybox-net", nimg)
		if err != nil {
			return err
		}
		if err := runNetSection(ctx, r, h, backend, k.Vmlinux, floorInitrd, nref, agent, vmDir); err != nil {
			return err
		}
	}
	if o.has("rootfs") {
		if err := runSection4(ctx, r, tmp); err != nil {
			return err
		}
	}
	if o.has("workspace") || o.has("density") || o.has("copy") || o.has("snapshot") {
		if err := runWorkspaceSections(ctx, r, root, h, backend, k.Vmlinux, floorInitrd, ref, agent, vmDir); err != nil {
			return err
		}
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

// runWorkspaceSections runs sections 5, 6, 9 and 10 with a freshly built
// microagent binary (the supervisors re-execute it; the CLI exec runs it).
// Every workspace is killed and deleted on the way out, error or not.
func runWorkspaceSections(ctx context.Context, r *results, root string, h home.Home, backend *qemu.Backend, vmlinux, floorInitrd, ref, agent string, vmDir func() (string, error)) error {
	o := r.opts
	exe := filepath.Join(r.tmp, "microagent")
	logf("building the microagent binary (workspace supervisors, CLI exec)")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", exe, "./cmd/microagent")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/microagent: %v\n%s", err, b)
	}
	e := &wsEnv{h: h, ref: ref, agent: agent, exe: exe}
	defer e.cleanupAll()
	if o.has("workspace") {
		r.sampleLoad()
		ws, err := measureWorkspace(ctx, e, backend, vmlinux, floorInitrd, vmDir, o.n, o.wsExecN)
		if err != nil {
			return fmt.Errorf("workspace section: %w", err)
		}
		r.ws = ws
		r.sampleLoad()
	}
	if o.has("density") {
		logf("density: up to %d tiny workspaces, bounded by %s", o.densityMax, o.densityTime)
		d, err := measureDensity(ctx, e, o.densityMax, o.densityTime, time.Second)
		if err != nil {
			return fmt.Errorf("density section: %w", err)
		}
		r.density = d
		r.sampleLoad()
	}
	if o.has("copy") {
		r.sampleLoad()
		c, err := measureCopy(ctx, e, r.tmp, o.n, o.copyMiB)
		if err != nil {
			return fmt.Errorf("copy section: %w", err)
		}
		r.copy = c
		r.sampleLoad()
	}
	if o.has("snapshot") {
		r.sampleLoad()
		s, err := measureSnapshot(ctx, e, backend, vmDir, o.n, o.snapMiB)
		if err != nil {
			return fmt.Errorf("snapshot section: %w", err)
		}
		r.snap = s
		r.sampleLoad()
	}
	return nil
}

// runSections123 runs sections 1-3: boots, Prepare, exec round trips.
func runSections123(ctx context.Context, r *results, h home.Home, backend *qemu.Backend, vmlinux, floorInitrd, ref, agent string, vmDir func() (string, error)) error {
	o := r.opts
	// 2b. The first Prepare on a machine that has only the kernel: pull,
	// root disk build, initramfs build. Each repetition gets a fresh state
	// directory sharing the installed kernel.
	logf("first Prepare x%d (fresh state directories)", o.n)
	fresh := filepath.Join(r.tmp, "fresh")
	if err := os.Mkdir(fresh, 0o700); err != nil {
		return err
	}
	for i := 0; i < o.n; i++ {
		fh, err := freshHome(h, fresh)
		if err != nil {
			return err
		}
		d, err := timePrepare(ctx, fh, ref, agent)
		if err != nil {
			return err
		}
		r.prepFirst = append(r.prepFirst, d)
		os.RemoveAll(fh.Root)
		if fh, err = freshHome(h, fresh); err != nil {
			return err
		}
		s, err := timePrepareSteps(ctx, fh, ref, agent)
		if err != nil {
			return err
		}
		r.stepsFirst = append(r.stepsFirst, s)
		os.RemoveAll(fh.Root)
	}

	// 1. Boots, interleaved so that load changes hit floor and target alike;
	// round 0 warms the page cache and is not counted.
	for i := 0; i <= o.n; i++ {
		label := fmt.Sprintf("round %d/%d", i, o.n)
		if i == 0 {
			label = "warm-up round"
		}
		logf("boots, %s: raw boot, raw echo, runner.Run true", label)
		r.sampleLoad()
		dir, err := vmDir()
		if err != nil {
			return err
		}
		rb, err := bootRaw(ctx, backend, vmlinux, floorInitrd, dir)
		if err != nil {
			return err
		}
		if dir, err = vmDir(); err != nil {
			return err
		}
		rtts := o.rttN
		if i == 0 {
			rtts = 10
		}
		eb, err := bootEcho(ctx, backend, vmlinux, floorInitrd, dir, rtts)
		if err != nil {
			return err
		}
		cr, err := runTrue(ctx, h, backend, ref, agent)
		if err != nil {
			return err
		}
		if i > 0 {
			r.raw = append(r.raw, rb)
			r.echo = append(r.echo, eb)
			r.cold = append(r.cold, cr)
		}
		r.floorArgs = rb.args
	}

	// 2a. Prepare on a warm store (after one untimed call, which also lets
	// the kernel and agent stamps settle).
	logf("warm Prepare x%d", o.n)
	r.sampleLoad()
	if _, err := timePrepare(ctx, h, ref, agent); err != nil {
		return err
	}
	for i := 0; i < o.n; i++ {
		d, err := timePrepare(ctx, h, ref, agent)
		if err != nil {
			return err
		}
		r.prepWarm = append(r.prepWarm, d)
		s, err := timePrepareSteps(ctx, h, ref, agent)
		if err != nil {
			return err
		}
		r.stepsWarm = append(r.stepsWarm, s)
	}

	// 3. Exec and hello round trips on one booted VM.
	logf("exec VM: %d x exec true, %d x hello", o.execN, o.execN)
	var err error
	if r.channel, err = measureChannel(ctx, h, backend, ref, agent, o.execN); err != nil {
		return fmt.Errorf("exec VM: %w", err)
	}
	return nil
}

// runSection4 runs section 4: root disk builds from one large tar.
func runSection4(ctx context.Context, r *results, tmp string) error {
	o := r.opts
	mkfs := lookTool("mkfs.ext4")
	if mkfs == "" {
		return fmt.Errorf("mkfs.ext4 not found: install it with `apt-get install --no-install-recommends e2fsprogs`")
	}
	tarPath := filepath.Join(tmp, "layer.tar")
	logf("writing a %d MB tar of %s", o.rootfsMB, o.rootfsSrc)
	size, files, err := writeTreeTar(o.rootfsSrc, tarPath, o.rootfsMB*1_000_000)
	if err != nil {
		return err
	}
	r.tarSize, r.tarFiles = size, int64(files)
	layer, err := newFileLayer(tarPath)
	if err != nil {
		return err
	}
	rdir := filepath.Join(tmp, "rootfs-bench")
	if err := os.Mkdir(rdir, 0o700); err != nil {
		return err
	}
	for i := 0; i < o.n; i++ {
		logf("root disk builds, round %d/%d", i+1, o.n)
		r.sampleLoad()
		rr, err := measureRootfs(ctx, tarPath, size, layer, rdir, mkfs)
		if err != nil {
			return err
		}
		r.rootfs = append(r.rootfs, rr)
	}
	os.Remove(tarPath)
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
