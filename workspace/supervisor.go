package workspace

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

	"github.com/microagent-dev/microagent/internal/proc"
	"github.com/microagent-dev/microagent/wsdir"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// DefaultHaltTimeout bounds a halt's graceful part (the guest stopping its
// processes and syncing its disks, then QEMU quitting) before QEMU is
// killed.
const DefaultHaltTimeout = 30 * time.Second

// SuperviseOptions configure a supervisor process.
type SuperviseOptions struct {
	Name string
	// Boot is the boot number Start recorded; a supervisor of any other
	// boot refuses to run.
	Boot int
	// Ready is the write end of Start's readiness pipe (closed by
	// Supervise once the VM is ready or has failed).
	Ready *os.File
	// Backend starts the VM (default: QEMU).
	Backend vmm.Backend
	// Log receives the supervisor's events (default: stderr, which Start
	// points at logs/supervisor.log).
	Log io.Writer
}

// supervisor is the state of a running supervisor process.
type supervisor struct {
	w    *wsDir
	boot int
	log  *log.Logger
	vm   *microvm.VM
	ln   *net.UnixListener

	reqs     chan stopReq
	finished chan struct{}
	replies  sync.WaitGroup // stop requests still writing their reply

	// For pause, resume and snapshots: the boot plan and manifest, the
	// guest RAM, and the secrets.
	plan     *bootPlan
	manifest *Manifest
	mem      *guestMemory
	sec      *supSecrets
	// ctl serializes pause, resume, snapshot and the halt's resume.
	ctl sync.Mutex
	// purged: a snapshot purged the guest's secrets; resuming restores
	// them. Guarded by ctl.
	purged bool

	mu     sync.Mutex
	paused bool
	phase  State
	execs  int
	final  *wsdir.Record
	// finishedSet is set (with final) once the VM has stopped; requests
	// arriving later are answered from final.
	finishedSet bool
	forced      string // why a halt had to force QEMU down
}

type stopReq struct {
	op      string
	timeout time.Duration
	reply   chan *wsdir.Record
}

// Supervise runs a workspace's supervisor: it boots the VM that Start
// prepared, reports readiness on o.Ready, serves the CLI on run/sup.sock
// and records how the VM ended. It returns when the VM has stopped. ctx
// ending (SIGTERM) halts the workspace gracefully.
//
// It is meant to run in its own process (see SuperviseCommand): QEMU is
// started to die with it.
func Supervise(ctx context.Context, h home.Home, o SuperviseOptions) (err error) {
	signal.Ignore(syscall.SIGHUP)
	logw := o.Log
	if logw == nil {
		logw = os.Stderr
	}
	lg := log.New(logw, "supervisor: ", log.LstdFlags|log.Lmicroseconds|log.LUTC|log.Lmsgprefix)
	send := func(msg readyMsg) {
		if o.Ready == nil {
			return
		}
		b, _ := json.Marshal(msg)
		o.Ready.Write(append(b, '\n'))
		if msg.final() {
			o.Ready.Close()
			o.Ready = nil
		}
	}
	notBooted := false // set while a failure leaves nothing launched
	ready := func(err error) {
		msg := readyMsg{OK: err == nil}
		if err != nil {
			msg.Error, msg.NotBooted = err.Error(), notBooted
		}
		send(msg)
	}
	if o.Ready != nil {
		// QEMU must not inherit the pipe: Start reads EOF as "supervisor gone".
		unix.CloseOnExec(int(o.Ready.Fd()))
	}
	defer func() {
		if err != nil {
			lg.Printf("exiting: %v", err)
		}
		ready(err)
	}()

	w, err := open(h, o.Name)
	if err != nil {
		return err
	}
	var plan bootPlan
	pb, err := os.ReadFile(w.Path(wsdir.RunDir, wsdir.PlanFile))
	if err == nil {
		err = json.Unmarshal(pb, &plan)
	}
	if err != nil {
		return fmt.Errorf("workspace %s: boot plan: %w", w.Name, err)
	}
	if plan.Boot != o.Boot {
		return fmt.Errorf("workspace %s: boot plan is for boot %d, not %d", w.Name, plan.Boot, o.Boot)
	}
	me := proc.Self()
	superseded := false
	if _, err := w.Update(func(r *wsdir.Record) error {
		if r.Boot != o.Boot || r.State != Starting {
			superseded = true
			return wsdir.ErrSkip
		}
		r.Supervisor = &me
		return nil
	}); err != nil {
		return err
	}
	if superseded {
		return fmt.Errorf("workspace %s: boot %d is no longer starting", w.Name, o.Boot)
	}
	// Secrets are resolved before anything is launched: a secret that
	// cannot be resolved fails the start with the VM never booted.
	var sec *supSecrets
	if plan.Secrets != nil && !plan.Secrets.Empty() {
		if sec, err = prepareSecrets(ctx, w, *plan.Secrets, lg); err != nil {
			notBooted = true
			return fmt.Errorf("%w; the VM was not booted", err)
		}
		defer sec.close()
		if ws := sec.warnings(); len(ws) > 0 {
			send(readyMsg{Warnings: ws})
		}
	}
	m, err := w.ReadManifest()
	if err != nil {
		notBooted = true
		return err
	}
	mem, err := prepareMemory(ctx, &plan)
	if err != nil {
		notBooted = true
		return fmt.Errorf("workspace %s: %w", w.Name, err)
	}
	defer mem.close()
	if r := plan.Restore; r != nil {
		lg.Printf("pid %d: resuming workspace %s from snapshot %s:%s (boot %d, %d MiB, %d CPU)", me.PID, w.Name, r.Source, r.Tag, o.Boot, plan.MemoryMiB, plan.CPUs)
	} else {
		lg.Printf("pid %d: booting workspace %s (boot %d, %d MiB, %d CPU)", me.PID, w.Name, o.Boot, plan.MemoryMiB, plan.CPUs)
	}
	os.Rename(w.ConsoleLog(), w.Path(wsdir.LogsDir, wsdir.PrevConsole)) // keep the previous boot's console

	backend := o.Backend
	if backend == nil {
		backend = qemu.New(qemu.Options{})
	}
	vm, err := microvm.Boot(ctx, microvm.Options{
		Backend:       backend,
		Kernel:        plan.Kernel,
		Initrd:        plan.Initrd,
		RootDisk:      plan.RootDisk,
		WritableDisk:  w.DiskPath(),
		MemoryMiB:     plan.MemoryMiB,
		CPUs:          plan.CPUs,
		RuntimeDir:    w.Path(wsdir.RunDir),
		SerialLog:     w.ConsoleLog(),
		Hello:         plan.Hello,
		BootTimeout:   plan.BootTimeout,
		DieWithParent: true,
		Memory:        &vmm.Memory{File: mem.file, Shared: mem.shared},
		Cmdline:       guestCmdline(&plan),
		Restore:       restoreOptions(plan.Restore),
		Network:       plan.Network,
	})
	if err != nil {
		st, reason := Failed, err.Error()
		if ctx.Err() != nil {
			st, reason = Halted, "halted during boot"
		}
		w.EndBoot(o.Boot, st, reason)
		w.CleanRuntime()
		return err
	}
	s := &supervisor{
		w: w, boot: o.Boot, log: lg, vm: vm, phase: Running,
		reqs: make(chan stopReq), finished: make(chan struct{}),
		plan: &plan, manifest: m, mem: mem, sec: sec,
	}
	kind := audit.Boot
	if plan.Restore != nil {
		kind = audit.Rehydrate
		if err := s.resumed(ctx, plan.Restore.Fork); err != nil {
			vm.Kill()
			s.record(Failed, err.Error())
			w.CleanRuntime()
			return err
		}
		if plan.Restore.Fork {
			// The fork's QEMU maps the RAM file; the links are not needed.
			os.RemoveAll(plan.Restore.Dir)
		}
	}
	if err := sec.deliver(ctx, vm.Client, kind); err != nil {
		vm.Kill()
		s.record(Failed, err.Error())
		w.CleanRuntime()
		return err
	}
	if err := w.deliverFiles(ctx, vm.Client, plan.Hello.User, lg); err != nil {
		vm.Kill()
		s.record(Failed, err.Error())
		w.CleanRuntime()
		return err
	}
	if err := s.listen(); err != nil {
		vm.Kill()
		s.record(Failed, err.Error())
		w.CleanRuntime()
		return err
	}
	var vmmID *proc.ID
	if id, err := proc.Identify(vm.Machine.PID()); err == nil {
		vmmID = &id
	}
	if _, err := w.Update(func(r *wsdir.Record) error {
		if r.Boot != o.Boot {
			return wsdir.ErrSkip
		}
		r.State, r.Owner, r.VMM, r.Ready = Running, nil, vmmID, vm.Ready
		return nil
	}); err != nil {
		vm.Kill()
		s.ln.Close()
		return err
	}
	lg.Printf("running: QEMU pid %d, guest ready in %s", vm.Machine.PID(), vm.Ready.Round(time.Millisecond))
	ready(nil)
	go s.accept()
	s.loop(ctx)
	return nil
}

func (s *supervisor) listen() error {
	p := s.w.SockPath()
	os.Remove(p)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return fmt.Errorf("workspace %s: supervisor socket: %w", s.w.Name, err)
	}
	if err := os.Chmod(p, wsdir.FilePerm); err != nil {
		ln.Close()
		return fmt.Errorf("workspace %s: supervisor socket: %w", s.w.Name, err)
	}
	s.ln = ln
	return nil
}

// record writes this boot's final state.
func (s *supervisor) record(st State, reason string) *wsdir.Record {
	r, _ := s.w.EndBoot(s.boot, st, reason)
	return r
}

// loop waits for the VM to stop (by request or not), then records why.
func (s *supervisor) loop(ctx context.Context) {
	m := s.vm.Machine
	var waiters []chan *wsdir.Record
	halting, killed := false, false
	sigc := ctx.Done()
	shutdownDone := make(chan struct{})
	startHalt := func(timeout time.Duration) {
		if halting || killed {
			return
		}
		halting = true
		s.setPhase(Halting)
		s.w.Update(func(r *wsdir.Record) error {
			if r.Boot != s.boot || r.State != Running {
				return wsdir.ErrSkip
			}
			r.State = Halting
			return nil
		})
		s.log.Printf("halting (timeout %s)", timeout)
		go func() {
			s.shutdown(timeout)
			close(shutdownDone)
		}()
	}
loop:
	for {
		select {
		case <-m.Done():
			break loop
		case <-sigc:
			sigc = nil
			s.log.Printf("signalled: halting")
			startHalt(DefaultHaltTimeout)
		case r := <-s.reqs:
			waiters = append(waiters, r.reply)
			switch r.op {
			case opHalt:
				startHalt(r.timeout)
			case opKill:
				if !killed {
					killed = true
					s.setPhase(Halting)
					s.log.Printf("killing QEMU")
					go m.Kill()
				}
			}
		}
	}
	if halting {
		// The halt's own account of how it went comes first; it ends
		// quickly once the VM is gone.
		select {
		case <-shutdownDone:
		case <-time.After(10 * time.Second):
		}
	}
	st, reason := s.endReason(halting, killed)
	s.log.Printf("VM stopped: %s %s", st, reason)
	s.ln.Close() // unlinks the socket: no new client reaches a dead VM
	final := s.record(st, reason)
	s.w.CleanRuntime()
	s.mu.Lock()
	s.final, s.finishedSet = final, true
	s.mu.Unlock()
	close(s.finished)
	for _, c := range waiters {
		c <- final
	}
	done := make(chan struct{})
	go func() { s.replies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	s.vm.Client.Close()
}

// shutdown powers the guest off gracefully: the agent stops every process
// and syncs the disks, then QEMU quits; past timeout QEMU is killed.
func (s *supervisor) shutdown(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// A paused guest cannot stop its processes: run it (no need to give
	// back purged secrets, it is going down).
	s.ctl.Lock()
	if s.isPaused() {
		if sn, err := s.snapshotter(); err == nil && sn.Resume(ctx) == nil {
			s.setPaused(false)
		}
	}
	s.ctl.Unlock()
	if err := s.vm.Client.Shutdown(ctx); err != nil {
		if ctx.Err() != nil {
			s.setForced(fmt.Sprintf("the guest did not stop its processes and sync within %s", timeout))
		} else {
			// A lost channel usually means the VM died under us (endReason
			// then says how); QEMU's exit may take a moment to be reaped.
			select {
			case <-s.vm.Machine.Done():
			case <-time.After(2 * time.Second):
				s.setForced(fmt.Sprintf("the guest's shutdown failed (%v)", err))
			}
		}
	}
	if err := s.vm.Machine.Shutdown(ctx); err != nil {
		s.setForced(fmt.Sprintf("QEMU did not quit within %s and was killed", timeout))
	}
}

func (s *supervisor) setForced(why string) {
	s.mu.Lock()
	if s.forced == "" {
		s.forced = why
	}
	s.mu.Unlock()
}

func (s *supervisor) setPhase(p State) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// endReason says how the VM ended.
func (s *supervisor) endReason(halting, killed bool) (State, string) {
	m := s.vm.Machine
	werr := m.Wait()
	switch {
	case killed:
		return Halted, "killed"
	case halting:
		s.mu.Lock()
		defer s.mu.Unlock()
		if werr != nil && s.forced == "" {
			return Halted, fmt.Sprintf("forced: the VM process exited during the halt: %v", werr)
		}
		if s.forced != "" {
			return Halted, "forced: " + s.forced
		}
		return Halted, ""
	}
	why := ""
	if sr, ok := m.(interface{ ShutdownReason() string }); ok {
		why = sr.ShutdownReason()
	}
	switch {
	case werr != nil:
		return Failed, fmt.Sprintf("the VM process exited unexpectedly: %v", werr)
	case why == "guest-shutdown":
		return Halted, "the guest powered itself off"
	case why == "guest-reset" || why == "guest-panic":
		return Failed, fmt.Sprintf("the guest rebooted or its kernel panicked (%s): see \"microagent logs %s\"", why, s.w.Name)
	case why != "":
		return Failed, fmt.Sprintf("the VM stopped unexpectedly (%s)", why)
	}
	return Failed, "the VM process exited unexpectedly"
}

func (s *supervisor) accept() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		go s.handle(c)
	}
}

func reply(c net.Conn, r channel.Reply) error {
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	defer c.SetWriteDeadline(time.Time{})
	return channel.WriteJSON(c, channel.FrameReply, r)
}

func (s *supervisor) handle(c *net.UnixConn) {
	// Only our own user may drive the workspace (the socket is 0600 in a
	// 0700 folder; this checks again).
	if !sameUser(c) {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req supRequest
	if err := channel.ReadJSON(c, channel.FrameHeader, &req); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	switch req.Op {
	case opStatus:
		s.mu.Lock()
		st := supStatus{State: s.phase, Execs: s.execs, VMMPID: s.vm.Machine.PID()}
		s.mu.Unlock()
		b, _ := json.Marshal(st)
		reply(c, channel.Reply{Data: b})
		c.Close()
	case opExec:
		s.exec(c, req.Exec)
	case opHalt, opKill:
		s.stop(c, req)
	case opPause, opResume, opSnapshot:
		data, err := s.handleControl(req)
		r := channel.Reply{Data: data}
		if err != nil {
			r.Error = err.Error()
		}
		reply(c, r)
		c.Close()
	case channel.OpCopyIn, channel.OpCopyOut:
		s.relay(c, req.Op, req.Copy)
	default:
		reply(c, channel.Reply{Error: fmt.Sprintf("unknown operation %q: is the supervisor older than this microagent? halt and start the workspace", req.Op)})
		c.Close()
	}
}

func (s *supervisor) stop(c net.Conn, req supRequest) {
	defer c.Close()
	if req.Timeout <= 0 {
		req.Timeout = DefaultHaltTimeout
	}
	rc := make(chan *wsdir.Record, 1)
	s.mu.Lock()
	final, over := s.final, s.finishedSet
	if !over {
		s.replies.Add(1)
		defer s.replies.Done()
	}
	s.mu.Unlock()
	if !over {
		select {
		case s.reqs <- stopReq{op: req.Op, timeout: req.Timeout, reply: rc}:
			final = <-rc
		case <-s.finished:
			s.mu.Lock()
			final = s.final
			s.mu.Unlock()
		}
	}
	var data []byte
	if final != nil {
		data, _ = json.Marshal(supStatus{State: final.State, Reason: final.Reason})
	}
	reply(c, channel.Reply{Data: data})
}

// exec splices the client's exec stream to a new guest stream (see
// splice); the guest kills the process group when the stream ends early.
func (s *supervisor) exec(c net.Conn, req *channel.ExecRequest) {
	defer c.Close()
	if req == nil || len(req.Argv) == 0 {
		reply(c, channel.Reply{Error: "exec without a command"})
		return
	}
	s.splice(c, channel.Header{Op: channel.OpExec, Exec: req}, true)
}

// splice opens a guest stream with header h and joins the client's
// connection to it. The exec and copy protocols are framed end to end, so
// the bytes pass through unparsed; when the client goes away the guest
// stream is closed. Only a running, unpaused workspace takes streams;
// counted streams show as execs in status.
func (s *supervisor) splice(c net.Conn, h channel.Header, counted bool) {
	s.mu.Lock()
	phase, paused := s.phase, s.paused
	ok := phase == Running && !paused
	if ok && counted {
		s.execs++
	}
	s.mu.Unlock()
	switch {
	case phase == Running && paused:
		reply(c, channel.Reply{Error: fmt.Sprintf("workspace %s is paused: resume it first (\"microagent resume %s\")", s.w.Name, s.w.Name)})
		return
	case !ok:
		reply(c, channel.Reply{Error: fmt.Sprintf("workspace %s is %s", s.w.Name, phase)})
		return
	}
	if counted {
		defer func() {
			s.mu.Lock()
			s.execs--
			s.mu.Unlock()
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	st, err := s.vm.Client.OpenRaw(ctx, h)
	cancel()
	if err != nil {
		reply(c, channel.Reply{Error: fmt.Sprintf("workspace %s: open a guest stream: %v", s.w.Name, err)})
		return
	}
	defer st.Close()
	if err := reply(c, channel.Reply{}); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(st, c)
		st.Close() // EOF to the guest: the client is gone (or done)
		close(done)
	}()
	io.Copy(c, st)
	c.Close()
	<-done
}

// sameUser checks the peer's credentials.
func sameUser(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return cerr == nil && cred != nil && int(cred.Uid) == os.Getuid()
}
