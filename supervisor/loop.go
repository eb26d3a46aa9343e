package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/microagent-dev/microagent/microvm"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// record writes this boot's final state.
func (s *supervisor) record(st wsdir.State, reason string) *wsdir.Record {
	r, _ := s.w.EndBoot(s.boot, st, reason)
	return r
}

// lostGrace is how long a lost session waits for the VM's own exit before
// it counts as the channel breaking.
const lostGrace = 2 * time.Second

// loop waits for the VM to stop (by request or not), then records why.
func (s *supervisor) loop(ctx context.Context) {
	m := s.vm.Machine
	go microvm.CapSerialLog(s.w.ConsoleLog(), s.log.Printf, s.finished)
	var waiters []chan *wsdir.Record
	halting, killed := false, false
	sigc := ctx.Done()
	// The guest channel's session ends by itself only if the guest broke
	// its protocol (a stream id used twice, a frame over its window ...):
	// nothing can reach the agent any more, so the VM is stopped and the
	// workspace failed with the reason, rather than left "running" and
	// unusable. A guest's root can always stop its own VM; this only says
	// why.
	lost := s.vm.Client.Closed()
	// Likewise the user network's own process (vmm.NetworkReporter): a
	// guest without its network is not left "running" and silently
	// offline; the VM is stopped and the workspace failed with the reason.
	var netDone <-chan struct{}
	nr, _ := m.(vmm.NetworkReporter)
	if nr != nil {
		netDone = nr.NetworkDone()
	}
	shutdownDone := make(chan struct{})
	startHalt := func(timeout time.Duration) {
		if halting || killed {
			return
		}
		halting = true
		s.setPhase(wsdir.Halting)
		s.w.Update(func(r *wsdir.Record) error {
			if r.Boot != s.boot || r.State != wsdir.Running {
				return wsdir.ErrSkip
			}
			r.State = wsdir.Halting
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
		case <-lost:
			lost = nil
			if halting || killed {
				continue
			}
			// A VM that stops (a guest powering off, a panic) ends the
			// session too: that is its own reason.
			if vmEnds(m) {
				break loop
			}
			killed = true
			s.stopLost(fmt.Sprintf("the guest agent's channel broke while the VM ran (the guest broke the channel protocol, or its agent died), so the VM was stopped: see \"microagent logs %s\" and start the workspace again", s.w.Name))
		case <-netDone:
			netDone = nil
			if halting || killed {
				continue
			}
			// The VM's own exit ends its network too.
			if vmEnds(m) {
				break loop
			}
			killed = true
			s.stopLost(fmt.Sprintf("the VM's network helper died while it ran (%v), so the VM was stopped rather than left offline: start the workspace again (\"microagent start %s\")", nr.NetworkErr(), s.w.Name))
		case <-sigc:
			sigc = nil
			s.log.Printf("signalled: halting")
			startHalt(DefaultHaltTimeout)
		case r := <-s.reqs:
			waiters = append(waiters, r.reply)
			switch r.op {
			case OpHalt:
				startHalt(r.timeout)
			case OpKill:
				if !killed {
					killed = true
					s.setPhase(wsdir.Halting)
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
	s.ln.Close()         // unlinks the socket: no new client reaches a dead VM
	s.sec.flushFetches() // the failed fetches' counts, before the boot is seen over
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

func (s *supervisor) setPhase(p wsdir.State) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// vmEnds reports whether the VM exits within lostGrace: a session or a
// network that ends with the VM is no failure of its own.
func vmEnds(m vmm.Machine) bool {
	select {
	case <-m.Done():
		return true
	case <-time.After(lostGrace):
		return false
	}
}

// stopLost stops a VM that cannot go on (why is recorded as the boot's
// end, Failed).
func (s *supervisor) stopLost(why string) {
	s.mu.Lock()
	s.lost = why
	s.mu.Unlock()
	s.setPhase(wsdir.Failed)
	s.log.Printf("stopping the VM: %s", why)
	go s.vm.Machine.Kill()
}

// endReason says how the VM ended.
func (s *supervisor) endReason(halting, killed bool) (wsdir.State, string) {
	m := s.vm.Machine
	werr := m.Wait()
	s.mu.Lock()
	lost := s.lost
	s.mu.Unlock()
	switch {
	case lost != "":
		return wsdir.Failed, lost
	case killed:
		return wsdir.Halted, "killed"
	case halting:
		s.mu.Lock()
		defer s.mu.Unlock()
		if werr != nil && s.forced == "" {
			return wsdir.Halted, fmt.Sprintf("forced: the VM process exited during the halt: %v", werr)
		}
		if s.forced != "" {
			return wsdir.Halted, "forced: " + s.forced
		}
		return wsdir.Halted, ""
	}
	why := ""
	if sr, ok := m.(vmm.ShutdownReasoner); ok {
		why = sr.ShutdownReason()
	}
	switch {
	case werr != nil:
		return wsdir.Failed, fmt.Sprintf("the VM process exited unexpectedly: %v", werr)
	case why == vmm.ReasonGuestShutdown:
		return wsdir.Halted, "the guest powered itself off"
	case why == vmm.ReasonGuestReset || why == vmm.ReasonGuestPanic:
		return wsdir.Failed, fmt.Sprintf("the guest rebooted or its kernel panicked (%s): see \"microagent logs %s\"", why, s.w.Name)
	case why != "":
		return wsdir.Failed, fmt.Sprintf("the VM stopped unexpectedly (%s)", why)
	}
	return wsdir.Failed, "the VM process exited unexpectedly"
}
