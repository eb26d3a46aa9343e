package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microagent-dev/microagent/bench/netpeer"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/internal/imagebuild"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/rootfs"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// netServerPath is where the transfer server lives in the network image.
const netServerPath = "/bin/netserver"

// netResult is section 8: TCP throughput through a published port.
type netResult struct {
	bytes int64
	// Upload is host → guest, Download guest → host; each sample is one
	// transfer of bytes on a new connection.
	loopUp, loopDown []time.Duration // host loopback TCP pair
	rawUp, rawDown   []time.Duration // raw QEMU, same user network, bare init
	maUp, maDown     []time.Duration // microagent VM, published port
	// netArgs are the QEMU network arguments both VMs ran with, and
	// provider the user network behind them (passt, or slirp).
	netArgs  []string
	provider string
}

// netImage is the busybox image with one more layer holding the server.
func netImage(serverBin string) (v1.Image, error) {
	bin, err := os.ReadFile(serverBin)
	if err != nil {
		return nil, err
	}
	base, err := imagebuild.BaseEntries()
	if err != nil {
		return nil, err
	}
	srv := []imagebuild.Entry{imagebuild.File(strings.TrimPrefix(netServerPath, "/"), string(bin), 0o755, 0, 0)}
	return imagebuild.Build(v1.Config{Env: []string{imagebuild.DefaultPath}, Cmd: []string{"/bin/sh"}}, base, srv)
}

// netServerBinary builds the guest's transfer server into dir.
func netServerBinary(ctx context.Context, root, dir string) (string, error) {
	p := filepath.Join(dir, "netserver")
	logf("building the guest's transfer server")
	return p, buildStatic(ctx, root, "./bench/netserver", p)
}

// publish returns a forward of a free host port to the guest's server.
func publish() (*vmm.Network, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return &vmm.Network{Forwards: []vmm.Forward{{HostIP: vmm.DefaultPublishIP, HostPort: port, GuestPort: netpeer.Port}}}, nil
}

func hostAddr(n *vmm.Network) string {
	f := n.Forwards[0]
	return fmt.Sprintf("%s:%d", f.HostIP, f.HostPort)
}

// runNetSection runs section 8: the same transfers over a host loopback
// pair, through a raw QEMU (the same user network, bare init) and through a microagent VM's
// published port, interleaved round by round; round 0 is a warm-up.
func runNetSection(ctx context.Context, r *results, h home.Home, backend *qemu.Backend, vmlinux, floorInitrd, ref, agent string, vmDir func() (string, error)) error {
	o := r.opts
	res := &netResult{bytes: int64(o.netMB) << 20}

	// Floor 1: the host's loopback, no VM.
	ll, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ll.Close()
	go netpeer.Serve(ll)
	loop := ll.Addr().String()

	// Floor 2: QEMU with the network arguments microagent gives it, and
	// a bare init serving the transfers.
	rawNet, err := publish()
	if err != nil {
		return err
	}
	dir, err := vmDir()
	if err != nil {
		return err
	}
	res.provider = backend.UserNetwork().Provider
	logf("network: booting the raw floor VM (%s, bare init)", res.provider)
	fifo := filepath.Join(dir, "serial.fifo")
	con, err := newConsole(fifo)
	if err != nil {
		return err
	}
	defer con.Close()
	bctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	m, err := backend.StartWith(bctx, qemu.MachineConfig{Config: vmm.Config{
		Kernel:        vmlinux,
		Initrd:        floorInitrd,
		Cmdline:       "benchmode=net",
		MemoryMiB:     qemu.DefaultMemoryMiB,
		CPUs:          qemu.DefaultCPUs,
		SerialLog:     fifo,
		RuntimeDir:    dir,
		DieWithParent: true,
		Network:       rawNet,
	}})
	if err != nil {
		return fmt.Errorf("network floor VM: %w", err)
	}
	defer m.Kill()
	if _, err := con.wait(bctx, m); err != nil {
		return fmt.Errorf("network floor VM: %w", err)
	}
	raw := hostAddr(rawNet)
	if err := netpeer.Ready(raw, time.Minute); err != nil {
		return fmt.Errorf("network floor VM: %w; console: %s", err, con.Tail())
	}
	res.netArgs = netArgsOf(m.Args())

	// Target: a microagent VM (agent, static network from the hello), its
	// server run through exec.
	maNet, err := publish()
	if err != nil {
		return err
	}
	logf("network: booting the microagent VM with a published port")
	vm, cleanup, err := bootNetVM(ctx, h, backend, ref, agent, maNet)
	if err != nil {
		return fmt.Errorf("network VM: %w", err)
	}
	defer cleanup()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	srvDone := make(chan error, 1)
	go func() {
		_, err := vm.Client.Exec(sctx, channel.ExecRequest{Argv: []string{netServerPath}}, nil, io.Discard, io.Discard)
		srvDone <- err
	}()
	ma := hostAddr(maNet)
	if err := netpeer.Ready(ma, time.Minute); err != nil {
		return fmt.Errorf("network VM: %w", err)
	}

	for i := 0; i <= o.n; i++ {
		logf("network: %d MiB each way, loopback / raw VM / microagent, round %d/%d", o.netMB, i, o.n)
		r.sampleLoad()
		for _, p := range []struct {
			addr     string
			up, down *[]time.Duration
		}{
			{loop, &res.loopUp, &res.loopDown},
			{raw, &res.rawUp, &res.rawDown},
			{ma, &res.maUp, &res.maDown},
		} {
			up, err := netpeer.Upload(p.addr, res.bytes)
			if err != nil {
				return fmt.Errorf("network: %w", err)
			}
			down, err := netpeer.Download(p.addr, res.bytes)
			if err != nil {
				return fmt.Errorf("network: %w", err)
			}
			if i > 0 {
				*p.up = append(*p.up, up)
				*p.down = append(*p.down, down)
			}
		}
		select {
		case err := <-srvDone:
			return fmt.Errorf("network: the guest's server exited: %v", err)
		default:
		}
	}
	r.net = res
	r.sampleLoad()
	return nil
}

// netArgsOf picks the network arguments out of a QEMU command line.
func netArgsOf(args []string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-netdev" || (args[i] == "-device" && strings.HasPrefix(args[i+1], "virtio-net")) {
			out = append(out, args[i], args[i+1])
		}
	}
	return out
}

// bootNetVM boots a VM as runner.Run does with network n (the same RAM and
// CPUs as the floor VM).
func bootNetVM(ctx context.Context, h home.Home, b vmm.Backend, ref, agent string, n *vmm.Network) (*microvm.VM, func(), error) {
	parts, err := guestboot.Prepare(ctx, h, guestboot.PrepareOptions{Image: ref, Pull: image.PullMissing, Agent: agent})
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp(h.Path(), "vm-")
	if err != nil {
		return nil, nil, err
	}
	rw := filepath.Join(dir, "rw.ext4")
	if err := rootfs.NewWritableDisk(ctx, h, rw, guestboot.Profiles[guestboot.DefaultProfile].DiskBytes); err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	vm, err := microvm.Boot(ctx, microvm.Options{
		Backend:       b,
		Kernel:        parts.Kernel.Vmlinux,
		Initrd:        parts.Initramfs,
		RootDisk:      parts.RootDisk,
		WritableDisk:  rw,
		MemoryMiB:     qemu.DefaultMemoryMiB,
		CPUs:          qemu.DefaultCPUs,
		RuntimeDir:    dir,
		SerialLog:     filepath.Join(dir, "console.log"),
		DieWithParent: true,
		Network:       n,
		Hello: channel.HelloRequest{
			Hostname: "microagent",
			Env:      parts.Image.Config.Env,
			Network:  guestboot.GuestNetwork(n, "microagent"),
		},
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return vm, func() { vm.Kill(); os.RemoveAll(dir) }, nil
}
