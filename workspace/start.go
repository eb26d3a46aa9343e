package workspace

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/internal/proc"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/hostcheck"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/secrets"
)

// DefaultHaltTimeout bounds a halt's graceful part (see supervisor).
const DefaultHaltTimeout = supervisor.DefaultHaltTimeout

// StartOptions say how to start a workspace.
type StartOptions struct {
	Name string
	// Executable is the microagent binary that runs the supervisor
	// (default: os.Executable()): any program that runs supervisor.Main
	// when started as supervisor.Command builds it (the tests pass their
	// own test binary).
	Executable string
	// Agent is the guest agent binary (empty: guestboot.AgentBinary).
	Agent string
	// BootTimeout bounds boot to agent-ready (default 2 minutes).
	BootTimeout time.Duration
	// Progress receives pull and build progress (nil: silent); a start
	// normally needs neither, the image being pinned and stored.
	Progress io.Writer
	// Secrets are declared at this start, in addition to the workspace's
	// own: they are resolved with them and, once the start succeeds, kept
	// in the manifest for every later start. A name (or env file) already
	// declared fails the start with ErrSecretDecl, changing nothing.
	Secrets secrets.Declarations
	// SecretsAudit turns on the secrets audit log (kept for later starts);
	// it also starts a new, empty log when the old one is missing.
	SecretsAudit bool
	// Warnings receives the plaintext-scheme warnings, one line each (nil:
	// discarded).
	Warnings io.Writer
	// ResolverEnv are variables (KEY=VALUE) the supervisor's secret
	// resolvers see besides this process's environment, winning over it:
	// the microagent node's socket for k8s: references, say. They are
	// references to where values live, never values.
	ResolverEnv []string
	// FromSnapshot rolls the workspace back to this snapshot: its disk is
	// replaced by the snapshot's and the saved machine resumes (memory,
	// devices and disk as they were). Refused for a live workspace, or a
	// snapshot this machine cannot resume, with nothing changed.
	FromSnapshot string
}

// maxSupLog is the size past which Start moves the supervisor log aside
// (to supervisor.log.1).
const maxSupLog = 1 << 20

// Start boots a workspace and returns once its guest agent has answered.
// The VM runs on under a detached supervisor process; the caller may exit.
// Starting a live workspace fails with ErrRunning (ErrBusy while it is
// starting or halting); a failed one is cleaned up and started again.
// When ctx ends before the VM is ready, the boot is abandoned and the
// workspace recorded as failed. A start whose secrets cannot be resolved
// (or whose audit log cannot be opened) fails before the VM is launched,
// naming the secret and the reason, and leaves the workspace in the state
// it was in.
func Start(ctx context.Context, h home.Home, o StartOptions) (*Info, error) {
	w, err := open(h, o.Name)
	if err != nil {
		return nil, err
	}
	l, err := w.Lock("start")
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	m, err := w.ReadManifest()
	if err != nil {
		return nil, err
	}
	if err := hostcheck.FitResources(m.Resources.MemoryMiB, m.Resources.CPUs); err != nil {
		return nil, fmt.Errorf("workspace %s is too large for this host: %v; the VM was not booted (a workspace keeps its resources: start it on a larger host, or create one with fewer)", w.Name, err)
	}
	for _, kv := range o.ResolverEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsRune(kv, 0) {
			return nil, &wsdir.Error{Name: w.Name, Op: "start", Err: fmt.Errorf("resolver environment: an entry is not KEY=VALUE")}
		}
	}
	sec, changed, err := w.startSecrets(m, o)
	if err != nil {
		return nil, err
	}
	obs, err := w.observe()
	if err != nil {
		return nil, err
	}
	if obs.state.Live() {
		return nil, liveError(w.Name, obs, "start")
	}
	if sec.Audit && !o.SecretsAudit {
		if err := w.auditMissing(); err != nil {
			return nil, err
		}
	}
	if err := w.stopOrphans(obs); err != nil {
		return nil, err
	}
	w.CleanSnapshotLeftovers() // of captures killed midway
	// After stopOrphans: an orphaned QEMU of this workspace may hold the
	// ports it publishes.
	network, err := w.startNetwork(m)
	if err != nil {
		return nil, err
	}
	// The hosts of secrets swapped at the egress join an allowlist in
	// force when they are declared at this start (recorded with the
	// declarations; a host revoked later stays revoked).
	swapHosts := network.AddSwapHosts(o.Secrets.EgressHosts())
	exe := o.Executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, &wsdir.Error{Name: w.Name, Op: "find the microagent binary for the supervisor", Err: err}
		}
	}
	backend, err := backendOf(m)
	if err != nil {
		return nil, &wsdir.Error{Name: w.Name, Err: err}
	}
	parts, err := guestboot.Prepare(ctx, h, guestboot.PrepareOptions{
		Image: m.Image.Pinned, Pull: image.PullMissing, KernelPath: m.KernelPath, Agent: o.Agent, Progress: o.Progress,
	})
	if err != nil {
		return nil, &wsdir.Error{Name: w.Name, Err: err}
	}
	restore, err := w.restoreFor(o.FromSnapshot, m, kernelID(parts.Kernel.VmlinuxSHA256), parts.Initramfs)
	if err != nil {
		return nil, err
	}
	if restore != nil && !restore.Fork {
		if err := w.rollBackDisk(ctx, restore.Dir); err != nil {
			return nil, err
		}
	}
	if err := w.CleanRuntime(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(w.Path(wsdir.LogsDir), wsdir.DirPerm); err != nil {
		return nil, err
	}
	// The supervisor log spans boots; keep it bounded.
	if fi, err := os.Stat(w.SupLog()); err == nil && fi.Size() > maxSupLog {
		os.Rename(w.SupLog(), w.SupLog()+".1")
	}
	me := proc.Self()
	var prev wsdir.Record
	rec, err := w.Update(func(r *wsdir.Record) error {
		prev = *r
		*r = wsdir.Record{Boot: r.Boot + 1, State: Starting, Owner: &me, Started: time.Now().UTC()}
		return nil
	})
	if err != nil {
		return nil, err
	}
	boot := rec.Boot
	plan := supervisor.Plan{
		Version:     supervisor.PlanVersion,
		Backend:     backend.Name(),
		Boot:        boot,
		Machine:     parts.Machine(guestboot.Resources(m.Resources), w.Name, network, vmm.UserNetworkOf(backend)),
		KernelID:    kernelID(parts.Kernel.VmlinuxSHA256),
		BootTimeout: o.BootTimeout,
	}
	if !sec.Empty() {
		plan.Secrets = &sec
	}
	plan.Restore = restore
	pb, _ := json.Marshal(plan)
	if err := wsdir.WriteFileAtomic(w.PlanPath(), pb); err != nil {
		return nil, w.startFailed(boot, fmt.Errorf("write the boot plan: %w", err))
	}
	if err := w.spawn(ctx, exe, boot, &prev, o.Warnings, o.ResolverEnv); err != nil {
		return nil, err
	}
	if changed {
		// Declarations made at this start are kept only now that it has
		// succeeded: a failed start changes nothing.
		err := m.SetSecrets(sec)
		if err == nil && swapHosts {
			err = m.SetNetwork(wsdir.NewNetworkConfig(*network))
		}
		if err == nil {
			err = wsdir.WriteManifest(w.ManifestPath(), m)
		}
		if err != nil {
			return nil, fmt.Errorf("workspace %s: started, but its new secret declarations were not saved (later starts will not have them): %w", w.Name, err)
		}
	}
	return w.info(ctx, false)
}

// startSecrets combines the workspace's secret declarations with those
// made at this start; changed says whether the manifest must be updated.
func (w *wsDir) startSecrets(m *Manifest, o StartOptions) (sec SecretsConfig, changed bool, err error) {
	sec, err = m.Secrets()
	if err != nil {
		return sec, false, err
	}
	if len(o.Secrets.Secrets) > 0 || len(o.Secrets.EnvFiles) > 0 || len(o.Secrets.EgressRoots) > 0 {
		d, err := mergeDecls(sec.Declarations, o.Secrets)
		if err != nil {
			return sec, false, declError(w.Name, err)
		}
		sec.Declarations, changed = d, true
	}
	if o.SecretsAudit && !sec.Audit {
		sec.Audit, changed = true, true
	}
	return sec, changed, nil
}

// liveError explains why an operation needing a workspace at rest refused.
func liveError(name string, o *observation, op string) error {
	switch o.state {
	case Starting, Halting:
		return fmt.Errorf("workspace %s is %s (%w): try again when it has finished", name, o.state, ErrBusy)
	}
	hint := fmt.Sprintf("halt it first (\"microagent halt %s\")", name)
	if op == "delete" {
		hint += ", or pass --force"
	}
	return fmt.Errorf("%w: %s (supervisor pid %d): %s", ErrRunning, name, o.rec.Supervisor.PID, hint)
}

// startFailed records a failed start (unless a newer boot or the supervisor
// already recorded the end) and returns err.
func (w *wsDir) startFailed(boot int, err error) error {
	err = &wsdir.Error{Name: w.Name, Op: "start", Err: err}
	w.EndBoot(boot, Failed, err.Error())
	w.CleanRuntime()
	return err
}

// startAborted puts the workspace back in the state it was in before a
// start that failed before launching the VM (nothing ran), keeping the new
// boot number so the aborted boot's supervisor can write nothing more, and
// returns err.
func (w *wsDir) startAborted(boot int, prev *wsdir.Record, err error) error {
	err = &wsdir.Error{Name: w.Name, Op: "start", Err: err}
	w.Update(func(r *wsdir.Record) error {
		if r.Boot != boot || !r.State.Live() {
			return wsdir.ErrSkip
		}
		if r.KillRequested {
			return wsdir.ErrSkip // the kill ends the boot below
		}
		*r = *prev
		r.Boot = boot
		return nil
	})
	w.EndBoot(boot, Halted, "killed")
	w.CleanRuntime()
	return err
}

// spawn starts the supervisor and waits for its readiness message; the
// warnings it sends on the way go to warn. prev is the record before this
// start.
func (w *wsDir) spawn(ctx context.Context, exe string, boot int, prev *wsdir.Record, warn io.Writer, extraEnv []string) error {
	logf, err := os.OpenFile(w.SupLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, wsdir.FilePerm)
	if err != nil {
		return w.startFailed(boot, fmt.Errorf("supervisor log: %w", err))
	}
	defer logf.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return w.startFailed(boot, err)
	}
	defer null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return w.startFailed(boot, err)
	}
	defer pr.Close()
	// The supervisor resolves secrets in this command's environment, which
	// it gets as a file rather than as its own environment (see EnvFile).
	envf, err := supervisor.EnvFile(append(os.Environ(), extraEnv...))
	if err != nil {
		pw.Close()
		return w.startFailed(boot, err)
	}
	cmd := supervisor.Command(exe, supervisor.Args{StateDir: w.Home.Root, Name: w.Name, Boot: boot}, logf, null, pw, envf)
	err = cmd.Start()
	pw.Close()
	envf.Close()
	if err != nil {
		return w.startFailed(boot, fmt.Errorf("run the supervisor (%s): %w", exe, err))
	}
	// Reap it if it exits while we live (a library caller may live long);
	// once we exit, init adopts it.
	go cmd.Wait()
	var sup *proc.ID
	if id, err := proc.Identify(cmd.Process.Pid); err == nil {
		sup = &id
		w.Update(func(r *wsdir.Record) error {
			if r.Boot != boot || r.State != Starting || r.Supervisor != nil {
				return wsdir.ErrSkip
			}
			r.Supervisor = sup
			return nil
		})
	}

	msgc := make(chan supervisor.Ready)
	stopRead := make(chan struct{})
	defer close(stopRead)
	go func() {
		br := bufio.NewReader(pr)
		for {
			var msg supervisor.Ready
			line, err := br.ReadBytes('\n')
			if err != nil && len(line) == 0 {
				msg = supervisor.Ready{} // EOF: the supervisor exited without a word
			} else if json.Unmarshal(line, &msg) != nil {
				msg = supervisor.Ready{Error: "garbled readiness message: " + strings.TrimSpace(string(line))}
			}
			select {
			case msgc <- msg:
			case <-stopRead:
				return
			}
			if msg.Final() {
				return
			}
		}
	}()
	var msg supervisor.Ready
	for {
		select {
		case msg = <-msgc:
		case <-ctx.Done():
		}
		if ctx.Err() != nil || msg.Final() {
			break
		}
		if warn != nil {
			for _, l := range msg.Warnings {
				fmt.Fprintln(warn, l)
			}
		}
	}
	switch {
	case ctx.Err() == nil:
		if msg.OK {
			return nil
		}
		if msg.NotBooted && msg.Error != "" {
			if sup != nil && !w.waitSupervisor(sup, 10*time.Second) {
				proc.KillAndWait(sup, 10*time.Second)
			}
			return w.startAborted(boot, prev, msg.Err())
		}
		if msg.Error != "" {
			// The supervisor has recorded a failed boot and is exiting;
			// a failure before the boot it leaves to us.
			if sup != nil && !w.waitSupervisor(sup, 10*time.Second) {
				proc.KillAndWait(sup, 10*time.Second)
			}
			return w.startFailed(boot, msg.Err())
		}
		if sup != nil {
			proc.KillAndWait(sup, 10*time.Second)
		}
		if r, err := w.ReadRecord(); err == nil && r.Boot == boot && r.VMM != nil {
			proc.KillAndWait(r.VMM, 10*time.Second)
		}
		return w.startFailed(boot, fmt.Errorf("the supervisor exited during boot%s", w.supLogTail()))
	default:
		if sup != nil {
			proc.KillAndWait(sup, 10*time.Second)
		}
		if r, err := w.ReadRecord(); err == nil && r.Boot == boot && r.VMM != nil {
			proc.KillAndWait(r.VMM, 10*time.Second)
		}
		w.startFailed(boot, errors.New("interrupted before the VM was ready"))
		return &wsdir.Error{Name: w.Name, Op: "start interrupted", Err: ctx.Err()}
	}
}

// supLogTail quotes the end of the supervisor log, which says why it
// stopped.
func (w *wsDir) supLogTail() string {
	b, err := os.ReadFile(w.SupLog())
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return " (supervisor log: " + strings.Join(lines, "; ") + ")"
}
