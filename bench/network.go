package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/bench/netpeer"
	"github.com/microagent-dev/microagent/channel"
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

// netSection is section 8: TCP throughput through a published port.
type netSection struct{}

func (netSection) name() string { return "network" }

// run times the same transfers over a host loopback pair, through a raw
// QEMU (the same user network, bare init) and through a microagent VM's
// published port (the busybox image plus the transfer server, run by
// exec), interleaved round by round; round 0 is a warm-up.
func (netSection) run(ctx context.Context, e *env) error {
	o, r := e.opts, e.r
	ref, err := e.imageWith(ctx, "the guest's transfer server", "./bench/netserver", netServerPath, "bench/busybox-net")
	if err != nil {
		return err
	}
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
	dir, err := e.vmDir()
	if err != nil {
		return err
	}
	// The floor keeps passt (issue #12: the new network is measured
	// against raw QEMU + passt); the target runs on the default network.
	floor := qemu.New(qemu.Options{UserNet: qemu.UserNetPasst})
	res.provider = floor.UserNetwork().Provider
	logf("network: booting the raw floor VM (%s, bare init)", res.provider)
	fifo := filepath.Join(dir, "serial.fifo")
	con, err := newConsole(fifo)
	if err != nil {
		return err
	}
	defer con.Close()
	bctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	m, err := floor.StartWith(bctx, qemu.MachineConfig{Config: vmm.Config{
		Kernel:        e.vmlinux,
		Initrd:        e.floorInitrd,
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
	vm, _, cleanup, err := bootVM(ctx, e, ref, maNet)
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
