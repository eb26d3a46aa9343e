// Package qemu is microagent's QEMU backend: it boots a kernel and
// initramfs on QEMU's microvm machine with virtio-blk disks, a virtio-serial
// port for the guest agent, the serial console in a file and QMP on a
// socket. See /work/shared/DESIGN.md for the measurements behind the
// choices (microvm, PVH vmlinux, the TCG clock arguments).
package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microagent-dev/microagent/vmm"
)

// DefaultBinary is the QEMU program looked up in PATH when Options.Binary
// is empty.
const DefaultBinary = "qemu-system-x86_64"

// installHint tells users how to get QEMU.
const installHint = "install it with apt-get install --no-install-recommends qemu-system-x86"

// Defaults for zero Config fields.
const (
	DefaultMemoryMiB = 256
	// DefaultCPUs is 1: under TCG on a 2-core host -smp 2 boots slower.
	DefaultCPUs = 1
)

// Options configures the backend.
type Options struct {
	// Binary is the QEMU program; empty means qemu-system-x86_64 from PATH.
	Binary string
	// Accel is "kvm", "tcg", or "" to auto-detect (see DetectAccel; the
	// MICROAGENT_ACCEL environment variable overrides auto-detection).
	Accel string
	// UserNet selects what serves user-mode networks: UserNetHelper (the
	// default), UserNetPasst or UserNetSlirp.
	UserNet string
	// NetHelper is the microagent-net program (empty: usernet.FindHelper's
	// lookup).
	NetHelper string
	// NetLog receives the decisions of every machine's network helper,
	// one JSON usernet.Event per line (nil: they are dropped). Writes are
	// serialised by the backend.
	NetLog io.Writer
	// Resolvers are the upstreams of the helper's DNS forwarder (empty:
	// the host's /etc/resolv.conf nameservers).
	Resolvers []netip.AddrPort
	// Passt is the passt program with UserNetPasst; empty means passt
	// from PATH.
	Passt string
}

// Backend starts QEMU microVMs. It implements vmm.Backend.
type Backend struct {
	opts  Options
	logMu sync.Mutex // serialises writes to opts.NetLog
}

var _ vmm.Backend = (*Backend)(nil)

// New returns a QEMU backend.
func New(opts Options) *Backend { return &Backend{opts: opts} }

// Name implements vmm.Backend.
func (b *Backend) Name() string { return BackendName }

// MachineConfig extends vmm.Config with QEMU-only settings, used through
// StartWith.
type MachineConfig struct {
	vmm.Config
	// ExtraArgs are appended to QEMU's command line as they are.
	ExtraArgs []string
}

// Start implements vmm.Backend.
func (b *Backend) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	m, err := b.StartWith(ctx, MachineConfig{Config: cfg})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// lookBinary resolves the QEMU program.
func (b *Backend) lookBinary() (string, error) {
	name := b.opts.Binary
	if name == "" {
		name = DefaultBinary
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("QEMU not found (%s): %s", name, installHint)
	}
	return p, nil
}

// accel resolves the accelerator and why it was chosen.
func (b *Backend) accel() (string, string, error) {
	switch b.opts.Accel {
	case AccelKVM, AccelTCG:
		return b.opts.Accel, "set in options", nil
	case "":
		a, r := DetectAccel()
		return a, r, nil
	default:
		return "", "", fmt.Errorf("qemu: unknown accelerator %q: use kvm, tcg or leave it empty to detect", b.opts.Accel)
	}
}

// versionRE matches "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)".
var versionRE = regexp.MustCompile(`QEMU emulator version (\d+\.\d+(?:\.\d+)?)`)

// Version runs "binary --version" (binary empty: qemu-system-x86_64 from
// PATH) and returns QEMU's version number, such as "7.2.22".
func Version(binary string) (string, error) {
	p, err := New(Options{Binary: binary}).lookBinary()
	if err != nil {
		return "", err
	}
	return version(context.Background(), p)
}

// version runs the QEMU program p with --version, bounded by ctx and ten
// seconds (a QEMU that hangs there is broken).
func version(ctx context.Context, p string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p, "--version")
	cmd.Env = vmm.ChildEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("running %s --version: %w", p, err)
	}
	return parseVersion(string(out))
}

func parseVersion(out string) (string, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		first, _, _ := strings.Cut(out, "\n")
		return "", fmt.Errorf("unrecognised QEMU version output %q", first)
	}
	return m[1], nil
}

// optEscape escapes a value for QEMU's "key=value,key=value" options, in
// which a literal comma is written twice.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// validate checks the configuration and fills defaults.
func validate(mc *MachineConfig) error {
	c := &mc.Config
	if err := checkFile("kernel", c.Kernel, `run "microagent kernel install"`); err != nil {
		return err
	}
	if err := checkFile("initramfs", c.Initrd, `rebuild it (run "microagent doctor")`); err != nil {
		return err
	}
	if c.MemoryMiB < 0 || c.CPUs < 0 {
		return fmt.Errorf("qemu: invalid machine size: %d MiB, %d CPUs", c.MemoryMiB, c.CPUs)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	for i := range c.Disks {
		d := &c.Disks[i]
		if d.Format == "" {
			d.Format = "raw"
		}
		if d.Format != "raw" && d.Format != "qcow2" {
			return fmt.Errorf("qemu: disk %d (%s): unsupported format %q: use raw or qcow2", i, d.Path, d.Format)
		}
		if err := checkFile(fmt.Sprintf("disk %d", i), d.Path, "check the workspace's disks"); err != nil {
			return err
		}
	}
	if c.Memory != nil && c.Memory.File == nil {
		return errors.New("qemu: Memory without a File")
	}
	if err := c.Network.Validate(); err != nil {
		return fmt.Errorf("qemu: network: %w", err)
	}
	return nil
}

func checkFile(what, path, hint string) error {
	if path == "" {
		return fmt.Errorf("qemu: no %s given: %s", what, hint)
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("qemu: %s %s does not exist: %s", what, path, hint)
		}
		return fmt.Errorf("qemu: %s %s: %w", what, path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("qemu: %s %s is not a regular file: %s", what, path, hint)
	}
	return nil
}

// launch holds the per-start values that go into the command line.
type launch struct {
	accel     string
	tscKHz    int // 0: no clock arguments
	channelFD int // -1: no agent channel
	memoryFD  int // -1: anonymous guest RAM
	streamFD  int // -1: slirp (or no NIC)
	qmpFD     int
}

// kernelCmdline is the guest kernel command line: console and clock
// arguments first, then the caller's.
func kernelCmdline(mc *MachineConfig, l launch) string {
	parts := []string{"console=ttyS0", "quiet", "panic=-1"}
	if l.accel == AccelTCG && l.tscKHz > 0 {
		// microvm has no HPET or PM timer: without a given TSC rate the
		// guest often hangs calibrating it under TCG; tsc=reliable stops
		// the clocksource watchdog from dropping the TSC later.
		parts = append(parts, "tsc_early_khz="+strconv.Itoa(l.tscKHz), "tsc=reliable")
	}
	if s := strings.TrimSpace(mc.Cmdline); s != "" {
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// buildArgs renders QEMU's command line (without the program name).
func buildArgs(mc *MachineConfig, l launch) []string {
	c := &mc.Config
	machine := "microvm" // ACPI stays on: the guest finds virtio-mmio through it
	if c.Memory != nil {
		machine += ",memory-backend=mem"
	}
	cpu := "max"
	if l.accel == AccelKVM {
		cpu = "host"
	}
	a := []string{
		"-M", machine,
		"-accel", l.accel,
		"-cpu", cpu,
		"-m", strconv.Itoa(c.MemoryMiB),
		"-smp", strconv.Itoa(c.CPUs),
		"-nodefaults", "-no-user-config", "-no-reboot",
		"-display", "none",
		"-kernel", c.Kernel,
		"-initrd", c.Initrd,
		"-append", kernelCmdline(mc, l),
	}
	if c.Memory != nil {
		// QEMU opens the inherited descriptor through /proc: the file
		// (often a memfd) needs no name, and nothing is left to clean up
		// when the processes die.
		share := "off"
		if c.Memory.Shared {
			share = "on"
		}
		a = append(a, "-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=/proc/self/fd/%d,share=%s",
			c.MemoryMiB, l.memoryFD, share))
	}
	for i, d := range c.Disks {
		drive := fmt.Sprintf("id=d%d,file=%s,format=%s,if=none", i, optEscape(d.Path), d.Format)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		a = append(a, "-drive", drive, "-device", fmt.Sprintf("virtio-blk-device,drive=d%d", i))
	}
	if l.channelFD >= 0 {
		a = append(a,
			"-device", "virtio-serial-device",
			"-chardev", fmt.Sprintf("socket,id=agent,fd=%d,server=on,wait=off", l.channelFD),
			"-device", "virtserialport,chardev=agent,name="+optEscape(c.ChannelName),
		)
	}
	a = append(a, netArgs(c.Network, l.streamFD)...)
	if c.SerialLog != "" {
		// append=on (O_APPEND): whoever caps the log can truncate it
		// under QEMU, whose next write then lands at the new end instead
		// of its old offset (a sparse file as large as ever).
		a = append(a, "-chardev", "file,id=serial0,path="+optEscape(c.SerialLog)+",append=on", "-serial", "chardev:serial0")
	} else {
		a = append(a, "-serial", "null")
	}
	a = append(a,
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", l.qmpFD),
		"-mon", "chardev=qmp,mode=control",
	)
	if c.Incoming {
		a = append(a, "-incoming", "defer")
	}
	return append(a, mc.ExtraArgs...)
}
