// Package runner runs one command in a throw-away microVM booted from an OCI
// image: the library behind `microagent run`. It boots the guest as
// guestboot assembles it, runs, streams and tears everything down, leaving
// no process or file behind.
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
	"slices"
	"time"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/credswap"
	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/rootfs"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/vmm"
)

// Options describe one run.
type Options struct {
	guestboot.PrepareOptions
	Backend vmm.Backend
	guestboot.Resources
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
	// starts, owned by the command's user (see guestboot.Put).
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

// ErrNetworkLost: the VM's user network died while the command ran (its
// helper process exited), so the run was stopped.
var ErrNetworkLost = errors.New("the VM's network died")

// Run boots a VM, runs the command, streams its output and tears the VM
// down. When the VM's network dies meanwhile, the command is stopped and
// Run fails with ErrNetworkLost.
func Run(ctx context.Context, h home.Home, o Options) (*Result, error) {
	// The hosts of secrets swapped at the egress join an allowlist in force.
	o.Network.AllowNames = slices.Clone(o.Network.AllowNames)
	o.Network.AddSwapHosts(o.Secrets.EgressHosts())
	if len(o.Secrets.Egress()) > 0 && o.Network.Isolated() {
		return nil, errors.New("--secret-egress needs the user network (its values are put in place on the way out): drop --network isolated")
	}
	// Network mistakes are found before anything is pulled or booted.
	if err := o.Network.Validate(); err != nil {
		return nil, err
	}
	userNet := vmm.UserNetworkOf(o.Backend)
	if err := o.Network.CheckUserNetwork(userNet); err != nil {
		return nil, err
	}
	if err := guestboot.CheckForwards(o.Network.Forwards); err != nil {
		return nil, err
	}
	if err := guestboot.CheckFiles(o.Files); err != nil {
		return nil, err
	}
	parts, err := guestboot.Prepare(ctx, h, o.PrepareOptions)
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
	if len(o.Secrets.Egress()) > 0 {
		// A one-shot run's CA lives as long as the run: no guest outlives
		// it to trust it later.
		cert, key, err := credswap.NewCA()
		if err != nil {
			return nil, err
		}
		defer clear(key)
		sw, phs, err := conduit.NewSwap(o.Secrets, cert, key, &conduit.SwapSource{Decls: o.Secrets, Limit: conduit.NewSwapLimiter()})
		if err != nil {
			return nil, err
		}
		o.Network.Swap = sw
		sec.SetEgress(phs, cert)
	}
	res, err := guestboot.ResolveResources("", o.Resources)
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
	m := parts.Machine(res, hostname, &o.Network, userNet)
	console := filepath.Join(dir, "console.log")
	vm, err := microvm.Boot(ctx, m.Options(o.Backend, guestboot.Paths{
		WritableDisk: rw, RuntimeDir: dir, SerialLog: console,
	}))
	if err != nil {
		return nil, err
	}
	defer vm.Kill()
	// A guest that floods its console fills at most twice the cap of the
	// host's disk, as a workspace's does.
	capStop := make(chan struct{})
	defer close(capStop)
	go microvm.CapSerialLog(console, nil, capStop)
	// A network whose process dies leaves the guest offline: the run
	// stops with that reason rather than going on silently cut off.
	ctx, lost := context.WithCancelCause(ctx)
	defer lost(nil)
	if nr, ok := vm.Machine.(vmm.NetworkReporter); ok && nr.NetworkDone() != nil {
		go func() {
			select {
			case <-nr.NetworkDone():
				if err := nr.NetworkErr(); err != nil {
					lost(fmt.Errorf("%w: %v; the command was stopped", ErrNetworkLost, err))
				}
			case <-ctx.Done():
			}
		}()
	}
	// A one-shot run has no workspace, so no audit log.
	if err := sec.Deliver(ctx, vm.Client, nil, audit.Boot); err != nil {
		return nil, err
	}
	// The guest's fetches cost the host what a workspace's do, at most.
	fetch, limit := conduit.OnDemand(o.Secrets, nil, nil), conduit.NewFetchLimiter()
	vm.Client.SetFetchHandler(func(ctx context.Context, name string) ([]byte, func(), error) {
		done, err := limit.Acquire()
		if err != nil {
			return nil, nil, &conduit.FetchError{Name: name, Err: err}
		}
		defer done()
		return fetch(ctx, name)
	})
	if len(o.Files) > 0 {
		owner := o.User
		if owner == "" {
			owner = parts.Image.Config.User
		}
		files := make([]guestboot.File, len(o.Files))
		for i, f := range o.Files {
			files[i] = guestboot.File{Spec: f}
		}
		if err := guestboot.Put(ctx, vm.Client, files, guestboot.PutOptions{Owner: owner}); err != nil {
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
	if cause := context.Cause(ctx); errors.Is(cause, ErrNetworkLost) {
		return nil, cause
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
