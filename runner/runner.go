// Package runner runs one command in a throw-away microVM booted from an OCI
// image: the library behind `microagent run`. It prepares the parts (image,
// root disk, kernel, initramfs), boots, runs, streams and tears everything
// down, leaving no process or file behind.
package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/initramfs"
	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/rootfs"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/vmm"
)

// AgentEnvVar overrides where the guest agent binary is found.
const AgentEnvVar = "MICROAGENT_AGENT"

// AgentBinary returns the guest agent's path: $MICROAGENT_AGENT, else
// microagent-agent beside the running executable.
func AgentBinary() (string, error) {
	if p := os.Getenv(AgentEnvVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("guest agent %s (from %s): %w", p, AgentEnvVar, err)
		}
		return p, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("guest agent: %w", err)
	}
	p := filepath.Join(filepath.Dir(exe), "microagent-agent")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("guest agent not found at %s: build it with \"make build\" (or set %s)", p, AgentEnvVar)
	}
	return p, nil
}

// Resources sizes a VM.
type Resources struct {
	MemoryMiB int
	CPUs      int
	// DiskBytes is the size of the writable layer.
	DiskBytes int64
}

// Profiles are named resource sizes.
var Profiles = map[string]Resources{
	"tiny":   {MemoryMiB: 128, CPUs: 1, DiskBytes: 1 << 30},
	"small":  {MemoryMiB: 256, CPUs: 1, DiskBytes: 2 << 30},
	"medium": {MemoryMiB: 1024, CPUs: 2, DiskBytes: 8 << 30},
	"large":  {MemoryMiB: 4096, CPUs: 4, DiskBytes: 32 << 30},
}

// DefaultProfile is used when no profile or size is given.
const DefaultProfile = "small"

// ResolveResources fills r's zero fields from the named profile (""
// means DefaultProfile) and checks the minimums a guest needs.
func ResolveResources(profile string, r Resources) (Resources, error) {
	pn := profile
	if pn == "" {
		pn = DefaultProfile
	}
	p, ok := Profiles[pn]
	if !ok {
		return r, fmt.Errorf("unknown profile %q: use tiny, small, medium or large", profile)
	}
	if r.MemoryMiB == 0 {
		r.MemoryMiB = p.MemoryMiB
	}
	if r.CPUs == 0 {
		r.CPUs = p.CPUs
	}
	if r.DiskBytes == 0 {
		r.DiskBytes = p.DiskBytes
	}
	if r.MemoryMiB < 64 || r.CPUs < 1 || r.DiskBytes < rootfs.MinWritableDisk {
		return r, fmt.Errorf("resources %d MiB, %d CPUs, %d disk bytes: need at least 64 MiB, 1 CPU and a %d MiB disk",
			r.MemoryMiB, r.CPUs, r.DiskBytes, rootfs.MinWritableDisk>>20)
	}
	return r, nil
}

// Parts are the prepared inputs of a boot.
type Parts struct {
	Image     *image.Image
	RootDisk  string
	Kernel    *kernel.Kernel
	Initramfs string
}

// PrepareOptions say what to prepare.
type PrepareOptions struct {
	Image string
	Pull  image.PullPolicy
	// KernelPath is the user's own kernel (--kernel); empty for the default.
	KernelPath string
	// Agent is the guest agent binary; empty finds it with AgentBinary.
	Agent string
	// Progress receives pull and build progress (nil: silent).
	Progress io.Writer
}

// Prepare pulls the image (per policy), builds or finds its root disk, and
// finds (installing on first use) and verifies the kernel and initramfs.
func Prepare(ctx context.Context, h home.Home, o PrepareOptions) (*Parts, error) {
	agent := o.Agent
	if agent == "" {
		var err error
		if agent, err = AgentBinary(); err != nil {
			return nil, err
		}
	}
	var k *kernel.Kernel
	var err error
	if o.KernelPath != "" {
		k, err = kernel.FromPath(o.KernelPath, "")
	} else {
		k, err = kernel.EnsureDefault(ctx, h, o.Progress)
	}
	if err != nil {
		return nil, err
	}
	if err := k.Verify(); err != nil {
		return nil, err
	}
	store, err := image.OpenStore(h)
	if err != nil {
		return nil, err
	}
	img, err := store.GetWithOptions(ctx, o.Image, o.Pull, image.PullOptions{Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	if o.Progress != nil {
		if _, err := os.Stat(rootfs.Path(h, img)); err != nil {
			fmt.Fprintf(o.Progress, "rootfs: building the root disk of %s\n", img.Ref)
		}
	}
	disk, err := rootfs.Ensure(ctx, h, img)
	if err != nil {
		return nil, err
	}
	initrd, err := initramfs.Ensure(h, agent, k)
	if err != nil {
		return nil, err
	}
	return &Parts{Image: img, RootDisk: disk, Kernel: k, Initramfs: initrd}, nil
}

// Options describe one run.
type Options struct {
	PrepareOptions
	Backend vmm.Backend
	Resources
	// Command replaces the image's Cmd (the Entrypoint stays), as with docker run.
	Command []string
	Env     []string
	Cwd     string
	User    string
	Timeout time.Duration
	// Hostname defaults to "microagent".
	Hostname string
	Stdin    io.Reader // nil: no stdin
	Stdout   io.Writer
	Stderr   io.Writer
	// Secrets are resolved before the VM boots (failing closed) and
	// delivered before the command starts; on-demand ones are resolved
	// afresh at each fetch. Plaintext warnings go to Warnings.
	Secrets  secrets.Declarations
	Warnings io.Writer
	// Network is the guest's network; the zero value is user mode with no
	// published ports and no host access.
	Network vmm.Network
	// Files are copied into the guest after boot, before the command
	// starts, owned by the command's user (see PutFiles).
	Files []tarcopy.FileSpec
}

// Result is how a run ended.
type Result struct {
	Exit channel.ExitStatus
	// Boot is the time from VMM start to the agent's answer.
	Boot time.Duration
}

// Argv returns the command to run: the image's Entrypoint followed by the
// given command, or by the image's Cmd when none is given.
func Argv(cfg image.Config, command []string) ([]string, error) {
	argv := append([]string{}, cfg.Entrypoint...)
	if len(command) > 0 {
		argv = append(argv, command...)
	} else {
		argv = append(argv, cfg.Cmd...)
	}
	if len(argv) == 0 {
		return nil, errors.New("the image has no Entrypoint or Cmd: give a command after the image")
	}
	return argv, nil
}

// Run boots a VM, runs the command, streams its output and tears the VM down.
func Run(ctx context.Context, h home.Home, o Options) (*Result, error) {
	// Network mistakes are found before anything is pulled or booted.
	if err := o.Network.Validate(); err != nil {
		return nil, err
	}
	userNet := vmm.UserNetworkOf(o.Backend)
	if err := o.Network.CheckUserNetwork(userNet); err != nil {
		return nil, err
	}
	if err := CheckForwards(o.Network.Forwards); err != nil {
		return nil, err
	}
	if err := CheckFiles(o.Files); err != nil {
		return nil, err
	}
	parts, err := Prepare(ctx, h, o.PrepareOptions)
	if err != nil {
		return nil, err
	}
	argv, err := Argv(parts.Image.Config, o.Command)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Image, err)
	}
	sec, err := conduit.Resolve(ctx, o.Secrets, nil)
	if err != nil {
		return nil, err
	}
	defer sec.Zero()
	sec.PrintWarnings(o.Warnings)
	res, err := ResolveResources("", o.Resources)
	if err != nil {
		return nil, err
	}
	runDir, err := h.Ensure(home.RunDir)
	if err != nil {
		return nil, err
	}
	var rb [4]byte
	rand.Read(rb[:])
	dir := filepath.Join(runDir, hex.EncodeToString(rb[:]))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	defer os.RemoveAll(dir)
	rw := filepath.Join(dir, "rw.ext4")
	if err := rootfs.NewWritableDisk(ctx, h, rw, res.DiskBytes); err != nil {
		return nil, err
	}
	hostname := o.Hostname
	if hostname == "" {
		hostname = "microagent"
	}
	vm, err := microvm.Boot(ctx, microvm.Options{
		Backend:       o.Backend,
		Kernel:        parts.Kernel.Vmlinux,
		Initrd:        parts.Initramfs,
		RootDisk:      parts.RootDisk,
		WritableDisk:  rw,
		MemoryMiB:     res.MemoryMiB,
		CPUs:          res.CPUs,
		RuntimeDir:    dir,
		SerialLog:     filepath.Join(dir, "console.log"),
		DieWithParent: true,
		Network:       &o.Network,
		Hello: channel.HelloRequest{
			Hostname:   hostname,
			Env:        parts.Image.Config.Env,
			User:       parts.Image.Config.User,
			WorkingDir: parts.Image.Config.WorkingDir,
			Network:    GuestNetworkFor(&o.Network, hostname, userNet),
		},
	})
	if err != nil {
		return nil, err
	}
	defer vm.Kill()
	// A one-shot run has no workspace, so no audit log.
	if err := sec.Deliver(ctx, vm.Client, nil, audit.Boot); err != nil {
		return nil, err
	}
	vm.Client.SetFetchHandler(conduit.OnDemand(o.Secrets, nil, nil))
	if len(o.Files) > 0 {
		owner := o.User
		if owner == "" {
			owner = parts.Image.Config.User
		}
		if err := PutFiles(ctx, vm.Client, o.Files, owner); err != nil {
			return nil, err
		}
	}
	es, err := vm.Client.Exec(ctx, channel.ExecRequest{
		Argv:    argv,
		Env:     o.Env,
		Cwd:     o.Cwd,
		User:    o.User,
		Stdin:   o.Stdin != nil,
		Timeout: o.Timeout,
	}, o.Stdin, o.Stdout, o.Stderr)
	if err == nil && ctx.Err() != nil {
		// Interrupted: the guest may have reported the kill before the
		// stream closed, but the caller asked to stop, not for an exit code.
		err = ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	// The writable layer is thrown away, so there is nothing to sync: quit
	// the VMM directly.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	vm.Client.Close()
	vm.Machine.Shutdown(qctx)
	return &Result{Exit: es, Boot: vm.Ready}, nil
}
