package guestboot

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/initramfs"
	"github.com/microagent-dev/microagent/kernel"
	"github.com/microagent-dev/microagent/rootfs"
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
	// KernelPath is the user's own kernel (--kernel): a vmlinux or bzImage
	// file, or the name of a kernel installed with "kernel install --name"
	// (with its modules); empty for the default.
	KernelPath string
	// Agent is the guest agent binary; empty finds it with AgentBinary.
	Agent string
	// Progress receives pull and build progress (nil: silent).
	Progress io.Writer
	// MaxImageBytes, when positive, refuses a larger image (see
	// image.PullOptions.MaxBytes).
	MaxImageBytes int64
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
		k, err = userKernel(h, o.KernelPath)
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
	img, err := store.GetWithOptions(ctx, o.Image, o.Pull, image.PullOptions{Progress: o.Progress, MaxBytes: o.MaxImageBytes})
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

// userKernel is --kernel's kernel: the file at p, or, when there is none
// and p is a plain name, the installed kernel of that name (a distribution
// kernel installed with its modules, say).
func userKernel(h home.Home, p string) (*kernel.Kernel, error) {
	if _, err := os.Stat(p); err != nil && !strings.ContainsRune(p, '/') {
		if k, lerr := kernel.Load(h, p); lerr == nil {
			return k, nil
		}
	}
	return kernel.FromPath(p, "")
}
