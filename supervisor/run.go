package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/errcode"
	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/proc"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// DefaultHaltTimeout bounds a halt's graceful part (the guest stopping its
// processes and syncing its disks, then the VMM quitting) before the VMM
// is killed.
const DefaultHaltTimeout = 30 * time.Second

// Options configure a supervisor.
type Options struct {
	Name string
	// Boot is the boot number the start recorded; a supervisor of any
	// other boot refuses to run.
	Boot int
	// Ready is the write end of the start's readiness pipe (closed by Run
	// once the VM is ready or has failed).
	Ready *os.File
	// Backend starts the VM (default: the plan's backend, or vmm.Default).
	Backend vmm.Backend
	// Log receives the supervisor's events (default: stderr, which the
	// start points at logs/supervisor.log).
	Log io.Writer
}

// supervisor is the state of a running supervisor process.
type supervisor struct {
	w    *wsdir.Dir
	boot int
	log  *log.Logger
	vm   *microvm.VM
	ln   *net.UnixListener

	reqs     chan stopReq
	finished chan struct{}
	replies  sync.WaitGroup // stop requests still writing their reply

	// For pause, resume and snapshots: the boot plan and manifest, the
	// guest RAM, and the secrets.
	plan     *Plan
	manifest *wsdir.Manifest
	mem      *guestMemory
	sec      *supSecrets
	// ctl serializes pause, resume, snapshot and the halt's resume.
	ctl sync.Mutex
	// purged: a snapshot purged the guest's secrets; resuming restores
	// them. Guarded by ctl.
	purged bool

	mu     sync.Mutex
	paused bool
	phase  wsdir.State
	execs  int
	// forwards counts the open port-forward connections.
	forwards int
	final    *wsdir.Record
	// finishedSet is set (with final) once the VM has stopped; requests
	// arriving later are answered from final.
	finishedSet bool
	forced      string // why a halt had to force the VMM down
	lost        string // why the VM was stopped after the channel broke

	jobs jobs
}

type stopReq struct {
	op      Op
	timeout time.Duration
	reply   chan *wsdir.Record
}

// Run is a workspace's supervisor: it boots (or resumes) the VM that the
// start prepared in the boot plan, reports readiness on o.Ready, serves
// clients on run/sup.sock and records how the VM ended. It returns when
// the VM has stopped. ctx ending (SIGTERM) halts the workspace gracefully.
//
// It is meant to run in its own process (see Command and Main): the VMM is
// started to die with it.
func Run(ctx context.Context, h home.Home, o Options) (err error) {
	signal.Ignore(syscall.SIGHUP)
	logw := o.Log
	if logw == nil {
		logw = os.Stderr
	}
	b := &booting{o: o, log: log.New(logw, "supervisor: ", log.LstdFlags|log.Lmicroseconds|log.LUTC|log.Lmsgprefix)}
	if o.Ready != nil {
		// The VMM must not inherit the pipe: the start reads EOF as
		// "supervisor gone".
		unix.CloseOnExec(int(o.Ready.Fd()))
	}
	defer func() {
		if err != nil {
			b.log.Printf("exiting: %v", err)
		}
		b.ready(err)
	}()
	if b.w, err = wsdir.Open(h, o.Name); err != nil {
		return err
	}
	if err := b.claim(); err != nil {
		return err
	}
	for _, st := range steps(b.plan.Restore != nil) {
		if err := st.run(b, ctx); err != nil {
			b.log.Printf("boot step %q failed", st.name)
			b.unwind(ctx, err)
			return err
		}
	}
	b.cleanups = nil // the boot succeeded: nothing to undo
	defer b.closeAll()
	b.log.Printf("running: VMM pid %d, guest ready in %s", b.vm.Machine.PID(), b.vm.Ready.Round(time.Millisecond))
	b.ready(nil)
	go b.s.accept()
	b.s.loop(ctx)
	return nil
}

// booting is a boot in progress: what its steps have made so far, and how
// to undo it.
type booting struct {
	o    Options
	log  *log.Logger
	w    *wsdir.Dir
	plan *Plan
	m    *wsdir.Manifest
	sec  *supSecrets
	mem  *guestMemory
	vm   *microvm.VM
	s    *supervisor
	// launched is set once the VMM has been started: a failure before it
	// leaves the workspace as it was (Ready.NotBooted).
	launched bool
	// cleanups undo the steps, last first, once, on failure; closers
	// release what the running supervisor holds, when it ends.
	cleanups []func()
	closers  []func()
}

// step is one named step of a boot.
type step struct {
	name string
	run  func(*booting, context.Context) error
}

// steps lists a boot's steps; a restore (or a fork's first start) resumes
// the saved guest instead of waiting for a new one, and must bring it up to
// date before anything else talks to it.
func steps(restore bool) []step {
	s := []step{
		{"resolve secrets", (*booting).resolveSecrets},
		{"prepare the secret swap", (*booting).prepareSwap},
		{"read the manifest", (*booting).readManifest},
		{"prepare guest memory", (*booting).prepareMemory},
		{"launch the VM", (*booting).launch},
	}
	if restore {
		s = append(s, step{"bring the resumed guest up to date", (*booting).resumed})
	}
	return append(s,
		step{"deliver secrets", (*booting).deliverSecrets},
		step{"deliver files", (*booting).deliverFiles},
		step{"listen", (*booting).listen},
		step{"record running", (*booting).recordRunning},
	)
}

// ready sends the readiness message for err (nil: ready) unless one was
// sent already.
func (b *booting) ready(err error) {
	msg := Ready{OK: err == nil}
	if err != nil {
		msg.Error, msg.Codes, msg.NotBooted = err.Error(), errcode.Codes(err), !b.launched && b.plan != nil
	}
	b.send(msg)
}

func (b *booting) send(msg Ready) {
	if b.o.Ready == nil {
		return
	}
	line, _ := json.Marshal(msg)
	b.o.Ready.Write(append(line, '\n'))
	if msg.Final() {
		b.o.Ready.Close()
		b.o.Ready = nil
	}
}

// onFail pushes an undo of the step that just succeeded; onEnd a release
// for when the supervisor ends (after a failure too).
func (b *booting) onFail(f func()) { b.cleanups = append(b.cleanups, f) }
func (b *booting) onEnd(f func())  { b.closers = append(b.closers, f) }

// unwind undoes the steps done so far after err, last first, and records
// the end of a boot that was launched.
func (b *booting) unwind(ctx context.Context, err error) {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
	if b.launched {
		st, reason := wsdir.Failed, err.Error()
		if ctx.Err() != nil {
			st, reason = wsdir.Halted, "halted during boot"
		}
		b.w.EndBoot(b.o.Boot, st, reason)
		b.w.CleanRuntime()
	}
	b.closeAll()
}

func (b *booting) closeAll() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}

// claim reads the boot plan and takes the boot over from the start command:
// only the supervisor of the boot the record names may run.
func (b *booting) claim() error {
	var plan Plan
	pb, err := os.ReadFile(b.w.PlanPath())
	if err == nil {
		err = json.Unmarshal(pb, &plan)
	}
	if err != nil {
		return &wsdir.Error{Name: b.w.Name, Op: "boot plan", Err: err}
	}
	if plan.Version > PlanVersion {
		return fmt.Errorf("workspace %s: boot plan version %d is newer than this supervisor knows (%d)", b.w.Name, plan.Version, PlanVersion)
	}
	if plan.Boot != b.o.Boot {
		return fmt.Errorf("workspace %s: boot plan is for boot %d, not %d", b.w.Name, plan.Boot, b.o.Boot)
	}
	me := proc.Self()
	superseded := false
	if _, err := b.w.Update(func(r *wsdir.Record) error {
		if r.Boot != b.o.Boot || r.State != wsdir.Starting {
			superseded = true
			return wsdir.ErrSkip
		}
		r.Supervisor = &me
		return nil
	}); err != nil {
		return err
	}
	if superseded {
		return fmt.Errorf("workspace %s: boot %d is no longer starting", b.w.Name, b.o.Boot)
	}
	b.plan = &plan
	return nil
}

// resolveSecrets resolves the secrets before anything is launched: a
// secret that cannot be resolved fails the start with the VM never booted.
func (b *booting) resolveSecrets(ctx context.Context) error {
	p := b.plan.Secrets
	if p == nil || p.Empty() {
		return nil
	}
	sec, err := prepareSecrets(ctx, b.w, *p, b.log)
	if err != nil {
		return fmt.Errorf("%w; the VM was not booted", err)
	}
	b.sec = sec
	b.onEnd(sec.close)
	if ws := sec.warnings(); len(ws) > 0 {
		b.send(Ready{Warnings: ws})
	}
	return nil
}

// prepareSwap gives the VM's network the secret swap of the
// --secret-egress declarations (placeholders, the workspace CA, values
// from this supervisor per request).
func (b *booting) prepareSwap(context.Context) error {
	if b.sec == nil {
		return nil
	}
	sw, err := b.sec.prepareSwap(b.w)
	if err != nil || sw == nil {
		return err
	}
	if b.plan.Network == nil || b.plan.Network.Isolated() {
		clear(sw.CAKey)
		return fmt.Errorf("workspace %s: --secret-egress needs the user network (its values are put in place on the way out), but the workspace has none; the VM was not booted", b.w.Name)
	}
	b.plan.Network.Swap = sw
	b.onEnd(func() { clear(sw.CAKey) })
	return nil
}

func (b *booting) readManifest(context.Context) (err error) {
	b.m, err = b.w.ReadManifest()
	return err
}

func (b *booting) prepareMemory(ctx context.Context) error {
	mem, err := prepareMemory(ctx, b.plan)
	if err != nil {
		return &wsdir.Error{Name: b.w.Name, Err: err}
	}
	b.mem = mem
	b.onEnd(mem.close)
	return nil
}

// backend is the VMM backend of the boot: the caller's, or the plan's by
// name.
func (b *booting) backend() (vmm.Backend, error) {
	if b.o.Backend != nil {
		return b.o.Backend, nil
	}
	if b.plan.Backend != "" {
		return vmm.Lookup(b.plan.Backend)
	}
	return vmm.Default()
}

// launch starts the VMM and waits for the guest agent's answer.
func (b *booting) launch(ctx context.Context) error {
	backend, err := b.backend()
	if err != nil {
		return &wsdir.Error{Name: b.w.Name, Err: err}
	}
	plan := b.plan
	// "booting"/"resuming" in the log means a VM was launched (tests and
	// people read it so): nothing before this step starts one.
	if r := plan.Restore; r != nil {
		b.log.Printf("pid %d: resuming workspace %s from snapshot %s:%s (boot %d, %d MiB, %d CPU)", os.Getpid(), b.w.Name, r.Source, r.Tag, b.o.Boot, plan.MemoryMiB, plan.CPUs)
	} else {
		b.log.Printf("pid %d: booting workspace %s (boot %d, %d MiB, %d CPU)", os.Getpid(), b.w.Name, b.o.Boot, plan.MemoryMiB, plan.CPUs)
	}
	os.Rename(b.w.ConsoleLog(), b.w.Path(wsdir.LogsDir, wsdir.PrevConsole)) // keep the previous boot's console
	b.launched = true
	o := plan.Options(backend, guestboot.Paths{
		WritableDisk: b.w.DiskPath(), RuntimeDir: b.w.Path(wsdir.RunDir), SerialLog: b.w.ConsoleLog(),
	})
	o.BootTimeout = plan.BootTimeout
	o.Memory = &vmm.Memory{File: b.mem.file, Shared: b.mem.shared}
	o.Cmdline = guestCmdline(plan)
	o.Restore = restoreOptions(plan.Restore)
	vm, err := microvm.Boot(ctx, o)
	if err != nil {
		return err
	}
	b.vm = vm
	b.onFail(func() { vm.Kill() })
	b.s = &supervisor{
		w: b.w, boot: b.o.Boot, log: b.log, vm: vm, phase: wsdir.Running,
		reqs: make(chan stopReq), finished: make(chan struct{}),
		plan: plan, manifest: b.m, mem: b.mem, sec: b.sec,
	}
	return nil
}

// resumed brings a restored or forked guest up to date (clock, entropy, a
// fork's identity) before anything else talks to it.
func (b *booting) resumed(ctx context.Context) error {
	r := b.plan.Restore
	if err := b.s.resumed(ctx, r.Fork); err != nil {
		return err
	}
	if r.Fork {
		// The fork's VMM maps the RAM file; the links are not needed.
		os.RemoveAll(r.Dir)
	}
	return nil
}

func (b *booting) deliverSecrets(ctx context.Context) error {
	kind := audit.Boot
	if b.plan.Restore != nil {
		kind = audit.Rehydrate
	}
	return b.sec.deliver(ctx, b.vm.Client, kind)
}

func (b *booting) deliverFiles(ctx context.Context) error {
	return deliverFiles(ctx, b.w, b.vm.Client, b.plan.Hello.User, b.log)
}

func (b *booting) listen(context.Context) error {
	if err := b.s.listen(); err != nil {
		return err
	}
	b.onFail(func() { b.s.ln.Close() })
	return nil
}

// recordRunning records the boot as running, with its VMM process.
func (b *booting) recordRunning(context.Context) error {
	var vmmID *proc.ID
	if id, err := proc.Identify(b.vm.Machine.PID()); err == nil {
		vmmID = &id
	}
	_, err := b.w.Update(func(r *wsdir.Record) error {
		if r.Boot != b.o.Boot {
			return wsdir.ErrSkip
		}
		r.State, r.Owner, r.VMM, r.Ready = wsdir.Running, nil, vmmID, b.vm.Ready
		return nil
	})
	return err
}
