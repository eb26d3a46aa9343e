package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/initramfs"
	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/rootfs"
	"github.com/microagent-dev/microagent/runner"
	"github.com/microagent-dev/microagent/vmm"
	"golang.org/x/sys/unix"
)

// timedBackend wraps the real backend to timestamp, from outside
// runner.Run, when the VMM is started and when it is asked to shut down.
type timedBackend struct {
	vmm.Backend
	started, startReturned time.Time
	machine                *timedMachine
}

func (b *timedBackend) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	b.started = time.Now()
	m, err := b.Backend.Start(ctx, cfg)
	b.startReturned = time.Now()
	if err != nil {
		return nil, err
	}
	b.machine = &timedMachine{Machine: m}
	return b.machine, nil
}

type timedMachine struct {
	vmm.Machine
	shutdown, shutdownReturned time.Time
}

func (m *timedMachine) Shutdown(ctx context.Context) error {
	m.shutdown = time.Now()
	err := m.Machine.Shutdown(ctx)
	m.shutdownReturned = time.Now()
	return err
}

// coldRun is one runner.Run of `true` and where its time went.
type coldRun struct {
	total    time.Duration
	prepare  time.Duration // call to VMM start (Prepare, writable disk)
	vmmStart time.Duration // VMM start to QMP answer (part of boot)
	boot     time.Duration // Result.Boot: VMM start to the agent's answer
	exec     time.Duration // agent ready to the VMM shutdown request
	teardown time.Duration // VMM shutdown request to return
	cpu      time.Duration // CPU time of QEMU and this process, call to return
}

// runTrue is `microagent run IMAGE true` as a library call.
func runTrue(ctx context.Context, e *env) (*coldRun, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	ref := e.ref
	tb := &timedBackend{Backend: e.backend}
	var stderr bytes.Buffer
	self0, children0 := cpuTimes()
	start := time.Now()
	res, err := runner.Run(ctx, e.h, runner.Options{
		PrepareOptions: guestboot.PrepareOptions{Image: ref, Pull: image.PullMissing, Agent: e.agent},
		Backend:        tb,
		Command:        []string{"true"},
		Stdout:         io.Discard,
		Stderr:         &stderr,
	})
	total := time.Since(start)
	self1, children1 := cpuTimes() // runner.Run returns once QEMU is reaped
	if err != nil {
		return nil, fmt.Errorf("runner.Run %s true: %w", ref, err)
	}
	if res.Exit.Code != 0 {
		return nil, fmt.Errorf("runner.Run %s true: exit %+v, stderr %q", ref, res.Exit, stderr.String())
	}
	if tb.machine == nil || tb.machine.shutdown.IsZero() {
		return nil, fmt.Errorf("runner.Run %s true: the VMM was never started or shut down through the backend", ref)
	}
	ready := tb.started.Add(res.Boot)
	return &coldRun{
		total:    total,
		prepare:  tb.started.Sub(start),
		vmmStart: tb.startReturned.Sub(tb.started),
		boot:     res.Boot,
		exec:     tb.machine.shutdown.Sub(ready),
		teardown: start.Add(total).Sub(tb.machine.shutdown),
		cpu:      self1 - self0 + children1 - children0,
	}, nil
}

// prepareSteps times the steps of guestboot.Prepare one by one.
type prepareSteps struct {
	kernel, image, rootfs, initramfs time.Duration
}

func timePrepareSteps(ctx context.Context, h home.Home, ref, agent string) (*prepareSteps, error) {
	var s prepareSteps
	t := time.Now()
	k, err := kernel.EnsureDefault(ctx, h, nil)
	if err == nil {
		err = k.Verify()
	}
	if err != nil {
		return nil, err
	}
	s.kernel = time.Since(t)
	t = time.Now()
	store, err := image.OpenStore(h)
	if err != nil {
		return nil, err
	}
	img, err := store.Get(ctx, ref, image.PullMissing)
	if err != nil {
		return nil, err
	}
	s.image = time.Since(t)
	t = time.Now()
	if _, err := rootfs.Ensure(ctx, h, img); err != nil {
		return nil, err
	}
	s.rootfs = time.Since(t)
	t = time.Now()
	if _, err := initramfs.Ensure(h, agent, k); err != nil {
		return nil, err
	}
	s.initramfs = time.Since(t)
	return &s, nil
}

func timePrepare(ctx context.Context, h home.Home, ref, agent string) (time.Duration, error) {
	t := time.Now()
	_, err := guestboot.Prepare(ctx, h, guestboot.PrepareOptions{Image: ref, Pull: image.PullMissing, Agent: agent})
	if err != nil {
		return 0, fmt.Errorf("guestboot.Prepare %s: %w", ref, err)
	}
	return time.Since(t), nil
}

// channelResult is the exec VM's boot facts and round trips.
type channelResult struct {
	ready       time.Duration // microvm.Boot's Ready
	agentUp     time.Duration // agent (PID 1) uptime when it answered, approx.
	kernelUp    time.Duration // guest kernel uptime when the agent answered, approx.
	hello, exec []time.Duration
	// helloCPU and execCPU are the CPU time of QEMU and this process over
	// all hellos and all execs.
	helloCPU, execCPU time.Duration
}

// bootVM boots one VM of image ref as runner.Run does (default profile,
// a fresh writable disk, network n: nil for none) and returns it with its
// Hello request; cleanup kills it and removes its folder.
func bootVM(ctx context.Context, e *env, ref string, n *vmm.Network) (vm *microvm.VM, hello channel.HelloRequest, cleanup func(), err error) {
	return bootVMOn(ctx, e, e.backend, ref, n)
}

// bootVMOn is bootVM on another backend (the network section's passt VM).
func bootVMOn(ctx context.Context, e *env, backend vmm.Backend, ref string, n *vmm.Network) (vm *microvm.VM, hello channel.HelloRequest, cleanup func(), err error) {
	parts, err := guestboot.Prepare(ctx, e.h, guestboot.PrepareOptions{Image: ref, Pull: image.PullMissing, Agent: e.agent})
	if err != nil {
		return nil, hello, nil, err
	}
	dir, err := os.MkdirTemp(e.h.Path(), "vm-")
	if err != nil {
		return nil, hello, nil, err
	}
	rw := filepath.Join(dir, "rw.ext4")
	def := guestboot.Profiles[guestboot.DefaultProfile]
	if err := rootfs.NewWritableDisk(ctx, e.h, rw, def.DiskBytes); err != nil {
		os.RemoveAll(dir)
		return nil, hello, nil, err
	}
	hello = channel.HelloRequest{
		Hostname:   "microagent",
		Env:        parts.Image.Config.Env,
		User:       parts.Image.Config.User,
		WorkingDir: parts.Image.Config.WorkingDir,
	}
	if n != nil {
		hello.Network = guestboot.GuestNetwork(n, hello.Hostname)
	}
	vm, err = microvm.Boot(ctx, microvm.Options{
		Backend:       backend,
		Kernel:        parts.Kernel.Vmlinux,
		Initrd:        parts.Initramfs,
		RootDisk:      parts.RootDisk,
		WritableDisk:  rw,
		MemoryMiB:     def.MemoryMiB,
		CPUs:          def.CPUs,
		RuntimeDir:    dir,
		SerialLog:     filepath.Join(dir, "console.log"),
		DieWithParent: true,
		Network:       n,
		Hello:         hello,
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, hello, nil, err
	}
	return vm, hello, func() { vm.Kill(); os.RemoveAll(dir) }, nil
}

// measureChannel boots one VM as runner.Run does and times Hello and
// Exec(["true"]) round trips on it.
func measureChannel(ctx context.Context, e *env) (*channelResult, error) {
	n := e.opts.execN
	vm, hello, cleanup, err := bootVM(ctx, e, e.ref, nil)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	readyAt := time.Now()
	r := &channelResult{ready: vm.Ready}

	// Where boot went, from the guest's clocks: the agent's uptime (since
	// /init started) and the kernel's (/proc/uptime), both carried back to
	// the moment Boot returned.
	hr, err := vm.Client.Hello(ctx, hello)
	if err != nil {
		return nil, err
	}
	r.agentUp = hr.Uptime - time.Since(readyAt)
	var out bytes.Buffer
	es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{"cat", "/proc/uptime"}}, nil, &out, io.Discard)
	if err != nil || es.Code != 0 {
		return nil, fmt.Errorf("exec cat /proc/uptime: %v %+v", err, es)
	}
	if f := strings.Fields(out.String()); len(f) > 0 {
		if up, err := strconv.ParseFloat(f[0], 64); err == nil {
			r.kernelUp = time.Duration(up*float64(time.Second)) - time.Since(readyAt)
		}
	}

	execTrue := func() error {
		es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{"true"}}, nil, io.Discard, io.Discard)
		if err != nil {
			return fmt.Errorf("exec true: %w", err)
		}
		if es.Code != 0 {
			return fmt.Errorf("exec true: exit %+v", es)
		}
		return nil
	}
	for i := 0; i < 5; i++ { // warm up the guest's page cache and the host's paths
		if err := execTrue(); err != nil {
			return nil, err
		}
	}
	cpu := startCPU(vm.Machine.PID())
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := execTrue(); err != nil {
			return nil, err
		}
		r.exec = append(r.exec, time.Since(t))
	}
	r.execCPU = cpu.since()
	cpu = startCPU(vm.Machine.PID())
	for i := 0; i < n; i++ {
		t := time.Now()
		if _, err := vm.Client.Hello(ctx, hello); err != nil {
			return nil, fmt.Errorf("hello: %w", err)
		}
		r.hello = append(r.hello, time.Since(t))
	}
	r.helloCPU = cpu.since()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := vm.Shutdown(sctx); err != nil {
		return nil, fmt.Errorf("shut the exec VM down: %w", err)
	}
	return r, nil
}

// rootfsRound is one repetition of the root disk build comparison.
type rootfsRound struct {
	build     time.Duration // rootfs.Build: flatten + tar2ext4 + fsync
	tar2ext4  time.Duration // tar2ext4 alone, tar file to ext4 file, + fsync
	untar     time.Duration // tar -x
	mkfs      time.Duration // mkfs.ext4 -d
	buildSize int64         // size of the ext4 rootfs.Build wrote (apparent)
}

// rootfsInput is what each round builds from: the tar (and the same bytes
// as an image layer), a scratch folder and the mkfs.ext4 to compare with.
type rootfsInput struct {
	tarPath string
	tarSize int64
	layer   *fileLayer
	dir     string
	mkfs    string
}

// measure builds the same tar into ext4 with rootfs.Build, tar2ext4
// alone, and tar -x followed by mkfs.ext4 -d.
func (in *rootfsInput) measure(ctx context.Context) (*rootfsRound, error) {
	tarPath, tarSize, dir, mkfs := in.tarPath, in.tarSize, in.dir, in.mkfs
	var r rootfsRound
	img, err := mutate.AppendLayers(empty.Image, in.layer)
	if err != nil {
		return nil, err
	}
	dst := filepath.Join(dir, "build.ext4")
	os.Remove(dst)
	unix.Sync() // start each step with no writeback pending
	t := time.Now()
	if err := rootfs.Build(ctx, img, dst); err != nil {
		return nil, fmt.Errorf("rootfs.Build: %w", err)
	}
	r.build = time.Since(t)
	if fi, err := os.Stat(dst); err == nil {
		r.buildSize = fi.Size()
	}
	os.Remove(dst)

	unix.Sync()
	t = time.Now()
	if err := convertTar(tarPath, dst); err != nil {
		return nil, err
	}
	r.tar2ext4 = time.Since(t)
	os.Remove(dst)

	tree := filepath.Join(dir, "tree")
	os.RemoveAll(tree)
	if err := os.Mkdir(tree, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tree)
	unix.Sync()
	t = time.Now()
	if out, err := exec.CommandContext(ctx, "tar", "-x", "-f", tarPath, "-C", tree).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tar -x: %v: %s", err, out)
	}
	r.untar = time.Since(t)
	// Room for the files plus ext4's metadata (inode tables, journal).
	sizeMiB := tarSize*3/2>>20 + 64
	mk := filepath.Join(dir, "mkfs.ext4")
	os.Remove(mk)
	unix.Sync()
	t = time.Now()
	if out, err := exec.CommandContext(ctx, mkfs, "-q", "-F", "-t", "ext4", "-d", tree, mk, strconv.FormatInt(sizeMiB, 10)+"M").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkfs.ext4 -d: %v: %s", err, out)
	}
	r.mkfs = time.Since(t)
	os.Remove(mk)
	return &r, nil
}

func convertTar(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := tar2ext4.ConvertTarToExt4(in, out, tar2ext4.MaximumDiskSize(128<<30)); err != nil {
		return fmt.Errorf("tar2ext4: %w", err)
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}
