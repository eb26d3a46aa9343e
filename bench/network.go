package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/bench/netpeer"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
	"github.com/microagent-dev/microagent/vmm/usernet"
)

// netServerPath is where the transfer server lives in the network image.
const netServerPath = "/bin/netserver"

// netResult is section 8: TCP through the user network, both ways.
type netResult struct {
	bytes int64
	// Upload is host → guest, Download guest → host; each sample is one
	// transfer of bytes on a new connection, dialled by the host through
	// a published port. Connect samples are one-byte downloads: the
	// connection's setup through the network and back.
	loopUp, loopDown, loopConn []time.Duration // host loopback TCP pair
	rawUp, rawDown, rawConn    []time.Duration // raw QEMU + passt, bare init
	maUp, maDown, maConn       []time.Duration // microagent VM, microagent-net
	// Outbound samples are dialled by the guest (its own client, started
	// by exec, timing itself) to a server on the host's loopback at the
	// gateway (host access): Up is guest → host, Down host → guest. The
	// floor is the same microagent VM on passt.
	passtOutUp, passtOutDown, passtOutConn []time.Duration
	maOutUp, maOutDown, maOutConn          []time.Duration
	// netArgs are the QEMU network arguments of the floor VM; provider
	// the user network behind it (passt).
	netArgs  []string
	provider string
	// helperIdle is the VmRSS of the microagent VM's network helper right
	// after boot, helperAfter after every transfer (and a second's rest);
	// passtIdle is the floor's passt right after boot.
	helperIdle, helperAfter, passtIdle int64
	// helperIdleAnon is the idle helper's anonymous (its own) memory; the
	// rest of its VmRSS is the binary's pages, shared by every helper.
	helperIdleAnon int64
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
// QEMU on passt (bare init) and through a microagent VM's published port
// on microagent-net, then the guest's own transfers out to the host from
// a microagent VM on passt and from the one on microagent-net,
// interleaved round by round; round 0 is a warm-up.
func (netSection) run(ctx context.Context, e *env) error {
	o, r := e.opts, e.r
	ref, err := e.imageWith(ctx, "the guest's transfer server", "./bench/netserver", netServerPath, "bench/busybox-net")
	if err != nil {
		return err
	}
	res := &netResult{bytes: int64(o.netMB) << 20}

	// Floor 1: the host's loopback, no VM; the guests' outbound target.
	ll, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ll.Close()
	go netpeer.Serve(ll)
	loop := ll.Addr().String()
	loopPort := ll.Addr().(*net.TCPAddr).Port
	out := fmt.Sprintf("%s:%d", vmm.UserAddressing.Gateway, loopPort)

	// Floor 2: QEMU on passt with a bare init serving the transfers.
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
	res.passtIdle, _ = procStatusKB(m.NetworkPID(), "VmRSS")

	// Target: a microagent VM on microagent-net, its server run through
	// exec behind a published port, the host's loopback server open to it.
	maNet, err := publish()
	if err != nil {
		return err
	}
	maNet.HostAccess, maNet.HostPorts = true, []int{loopPort}
	logf("network: booting the microagent VM (%s) with a published port", usernet.BinaryName)
	vm, _, cleanup, err := bootVM(ctx, e, ref, maNet)
	if err != nil {
		return fmt.Errorf("network VM: %w", err)
	}
	defer cleanup()
	helper := 0
	if np, ok := vm.Machine.(interface{ NetworkPID() int }); ok {
		helper = np.NetworkPID()
	}
	res.helperIdle, _ = procStatusKB(helper, "VmRSS")
	res.helperIdleAnon, _ = procStatusKB(helper, "RssAnon")
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

	// Outbound floor: the same microagent VM on passt.
	logf("network: booting the microagent VM on %s for the outbound floor", res.provider)
	pvm, _, pcleanup, err := bootVMOn(ctx, e, floor, ref, &vmm.Network{HostAccess: true})
	if err != nil {
		return fmt.Errorf("network passt VM: %w", err)
	}
	defer pcleanup()

	for i := 0; i <= o.n; i++ {
		logf("network: %d MiB each way and %d connections, loopback / raw VM / microagent / outbound on passt / outbound on %s, round %d/%d",
			o.netMB, o.netConns, usernet.BinaryName, i, o.n)
		r.sampleLoad()
		for _, p := range []struct {
			addr           string
			up, down, conn *[]time.Duration
		}{
			{loop, &res.loopUp, &res.loopDown, &res.loopConn},
			{raw, &res.rawUp, &res.rawDown, &res.rawConn},
			{ma, &res.maUp, &res.maDown, &res.maConn},
		} {
			up, err := netpeer.Upload(p.addr, res.bytes)
			if err != nil {
				return fmt.Errorf("network: %w", err)
			}
			down, err := netpeer.Download(p.addr, res.bytes)
			if err != nil {
				return fmt.Errorf("network: %w", err)
			}
			var conns []time.Duration
			for range o.netConns {
				d, err := netpeer.Download(p.addr, 1)
				if err != nil {
					return fmt.Errorf("network: connection setup: %w", err)
				}
				conns = append(conns, d)
			}
			if i > 0 {
				*p.up = append(*p.up, up)
				*p.down = append(*p.down, down)
				*p.conn = append(*p.conn, conns...)
			}
		}
		for _, p := range []struct {
			name           string
			vm             *microvm.VM
			up, down, conn *[]time.Duration
		}{
			{"the VM on " + res.provider, pvm, &res.passtOutUp, &res.passtOutDown, &res.passtOutConn},
			{"the VM on " + usernet.BinaryName, vm, &res.maOutUp, &res.maOutDown, &res.maOutConn},
		} {
			for _, t := range []struct {
				op    string
				count int
				into  *[]time.Duration
			}{{"U", 1, p.up}, {"D", 1, p.down}, {"C", o.netConns, p.conn}} {
				ds, err := guestTransfers(ctx, p.vm, out, t.op, t.count, res.bytes)
				if err != nil {
					return fmt.Errorf("network: outbound from %s: %w", p.name, err)
				}
				if i > 0 {
					*t.into = append(*t.into, ds...)
				}
			}
		}
		select {
		case err := <-srvDone:
			return fmt.Errorf("network: the guest's server exited: %v", err)
		default:
		}
	}
	time.Sleep(time.Second)
	res.helperAfter, _ = procStatusKB(helper, "VmRSS")
	r.net = res
	return nil
}

// guestTransfers runs the guest's client (netserver client) for count
// transfers of op to addr and returns the durations it measured.
func guestTransfers(ctx context.Context, vm *microvm.VM, addr, op string, count int, size int64) ([]time.Duration, error) {
	var stdout, stderr bytes.Buffer
	argv := []string{netServerPath, "client", addr, op, strconv.Itoa(count), strconv.FormatInt(size, 10)}
	res, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: argv}, nil, &stdout, &stderr)
	if err != nil {
		return nil, err
	}
	if res.Code != 0 {
		return nil, fmt.Errorf("%s: exit %d: %s", strings.Join(argv, " "), res.Code, strings.TrimSpace(stderr.String()))
	}
	var ds []time.Duration
	for _, f := range strings.Fields(stdout.String()) {
		ns, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: output %q", argv[0], f)
		}
		ds = append(ds, time.Duration(ns))
	}
	if len(ds) != count {
		return nil, fmt.Errorf("%s: %d durations, want %d", strings.Join(argv, " "), len(ds), count)
	}
	return ds, nil
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
