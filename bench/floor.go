package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// bootTimeout bounds one floor boot (TCG on a loaded host can be slow).
const bootTimeout = 2 * time.Minute

// console follows a VM's serial console through a FIFO given to QEMU as the
// serial log, so a marker line is timestamped the moment QEMU writes it
// (no polling of a file).
type console struct {
	f     *os.File
	lines chan stampedLine
	mu    sync.Mutex
	tail  []string
}

type stampedLine struct {
	at   time.Time
	text string
}

func newConsole(fifo string) (*console, error) {
	os.Remove(fifo)
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		return nil, fmt.Errorf("serial FIFO %s: %w", fifo, err)
	}
	// Read-write: the open never blocks, and reads never see EOF while
	// QEMU (or the backend's create-and-close of the log) comes and goes.
	f, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("serial FIFO %s: %w", fifo, err)
	}
	c := &console{f: f, lines: make(chan stampedLine, 64)}
	go c.read()
	return c, nil
}

func (c *console) read() {
	sc := bufio.NewScanner(c.f)
	for sc.Scan() {
		now := time.Now()
		line := strings.TrimSpace(sc.Text())
		c.mu.Lock()
		c.tail = append(c.tail, line)
		if len(c.tail) > 20 {
			c.tail = c.tail[1:]
		}
		c.mu.Unlock()
		if strings.HasPrefix(line, "BENCH_") {
			select {
			case c.lines <- stampedLine{now, line}:
			default:
			}
		}
	}
}

// Tail is the console's last lines, for error messages.
func (c *console) Tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, " | ")
}

func (c *console) Close() { c.f.Close() }

// wait returns the first marker line, or fails when the VM exits or the
// time is up.
func (c *console) wait(ctx context.Context, m *qemu.Machine) (stampedLine, error) {
	select {
	case l := <-c.lines:
		if strings.HasPrefix(l.text, "BENCH_FAIL") {
			return l, fmt.Errorf("guest: %s", l.text)
		}
		return l, nil
	case <-m.Done():
		return stampedLine{}, fmt.Errorf("the VM exited before its marker (%v); console: %s", m.Wait(), c.Tail())
	case <-ctx.Done():
		return stampedLine{}, fmt.Errorf("no marker within %s; console: %s", bootTimeout, c.Tail())
	}
}

// field reads "key=N" from a marker line as a duration in ns.
func field(line, key string) time.Duration {
	for _, w := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(w, key+"="); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return time.Duration(n)
		}
	}
	return -1
}

// rawBoot is one boot of the trivial init.
type rawBoot struct {
	qmp    time.Duration // StartWith: QEMU exec to QMP answer
	marker time.Duration // to the marker on the serial console
	exit   time.Duration // to QEMU's exit after the guest's power-off
	guest  time.Duration // guest kernel uptime at /init
	cpu    time.Duration // CPU time of QEMU and this process, start to exit
	args   []string
}

// bootRaw boots the floor VM (trivial /init that prints a marker and powers
// off) through the same backend and machine flags microagent uses.
func bootRaw(ctx context.Context, e *env) (*rawBoot, error) {
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	dir, err := e.vmDir()
	if err != nil {
		return nil, err
	}
	fifo := filepath.Join(dir, "serial.fifo")
	con, err := newConsole(fifo)
	if err != nil {
		return nil, err
	}
	defer con.Close()
	self0, children0 := cpuTimes()
	start := time.Now()
	m, err := e.backend.StartWith(ctx, qemu.MachineConfig{Config: vmm.Config{
		Kernel:        e.vmlinux,
		Initrd:        e.floorInitrd,
		MemoryMiB:     qemu.DefaultMemoryMiB,
		CPUs:          qemu.DefaultCPUs,
		SerialLog:     fifo,
		RuntimeDir:    dir,
		DieWithParent: true,
	}})
	if err != nil {
		return nil, fmt.Errorf("floor VM: %w", err)
	}
	defer m.Kill()
	r := &rawBoot{qmp: time.Since(start), args: m.Args()}
	l, err := con.wait(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("floor VM: %w", err)
	}
	r.marker = l.at.Sub(start)
	r.guest = field(l.text, "boottime_ns")
	select {
	case <-m.Done():
		r.exit = time.Since(start)
	case <-ctx.Done():
		return nil, fmt.Errorf("floor VM: QEMU did not exit after the guest powered off (console: %s)", con.Tail())
	}
	if err := m.Wait(); err != nil {
		return nil, fmt.Errorf("floor VM: %w", err)
	}
	self1, children1 := cpuTimes() // QEMU has been reaped: its time is in children
	r.cpu = self1 - self0 + children1 - children0
	return r, nil
}

// echoBoot is one boot of the raw-echo floor VM and its round trips.
type echoBoot struct {
	ready   time.Duration // VMM start to the first echoed message
	guest   time.Duration // guest kernel uptime at /init
	modules time.Duration // ... after loading the modules
	port    time.Duration // ... with the port open
	rtts    []time.Duration
	rttCPU  time.Duration // CPU time of QEMU and this process over all rtts
}

// echoPortName names the floor VM's virtio-serial port.
const echoPortName = "bench.echo"

// echoSize is the round trip's message size.
const echoSize = 64

// bootEcho boots the echo floor VM, times boot to the first echo, then
// measures n round trips of echoSize bytes through the host socket.
func bootEcho(ctx context.Context, e *env, n int) (*echoBoot, error) {
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	dir, err := e.vmDir()
	if err != nil {
		return nil, err
	}
	fifo := filepath.Join(dir, "serial.fifo")
	con, err := newConsole(fifo)
	if err != nil {
		return nil, err
	}
	defer con.Close()
	start := time.Now()
	m, err := e.backend.StartWith(ctx, qemu.MachineConfig{Config: vmm.Config{
		Kernel:        e.vmlinux,
		Initrd:        e.floorInitrd,
		Cmdline:       "benchmode=echo benchport=" + echoPortName,
		MemoryMiB:     qemu.DefaultMemoryMiB,
		CPUs:          qemu.DefaultCPUs,
		ChannelName:   echoPortName,
		SerialLog:     fifo,
		RuntimeDir:    dir,
		DieWithParent: true,
	}})
	if err != nil {
		return nil, fmt.Errorf("echo VM: %w", err)
	}
	defer m.Kill()
	// As microvm.Boot does: the connection the backend made as QEMU
	// started (it waited in the backlog until QEMU accepted it).
	conn, err := m.DialAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("echo socket: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() {
		select {
		case <-m.Done():
			conn.Close()
		case <-ctx.Done():
		}
	}()

	msg := bytes.Repeat([]byte("0123456789abcdef"), echoSize/16)
	got := make([]byte, echoSize)
	roundTrip := func() error {
		if _, err := conn.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(conn, got); err != nil {
			return err
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("echo returned %q, want %q", got, msg)
		}
		return nil
	}
	fail := func(err error) (*echoBoot, error) {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (time limit %s)", err, bootTimeout)
		}
		return nil, fmt.Errorf("echo VM: %w; console: %s", err, con.Tail())
	}
	// The first message waits for the guest to boot and open its port
	// (nothing written before is lost).
	if err := roundTrip(); err != nil {
		return fail(err)
	}
	r := &echoBoot{ready: time.Since(start)}
	select {
	case line := <-con.lines:
		r.guest = field(line.text, "boottime_ns")
		r.modules = field(line.text, "modules_ns")
		r.port = field(line.text, "port_ns")
	case <-time.After(5 * time.Second):
		return fail(errors.New("no BENCH_PORT line on the console"))
	}
	cpu := startCPU(m.PID())
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := roundTrip(); err != nil {
			return fail(err)
		}
		r.rtts = append(r.rtts, time.Since(t))
	}
	r.rttCPU = cpu.since()
	return r, nil
}
