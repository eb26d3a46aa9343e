package workspace

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/proc"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/wsdir"

	"github.com/microagent-dev/microagent/home"
)

// HaltOptions say how to halt a workspace.
type HaltOptions struct {
	Name string
	// Timeout bounds the graceful power-off (the guest stops its
	// processes and syncs its disks, QEMU quits); past it QEMU is killed.
	// The disk is kept either way. Default DefaultHaltTimeout.
	Timeout time.Duration
}

// supervisorGrace is how long a supervisor gets to exit after answering a
// stop request, or to answer at all, before it is killed.
const supervisorGrace = 15 * time.Second

// Halt powers a workspace off: gracefully within o.Timeout, then by force.
// The disk is kept. Halting a workspace at rest changes nothing (it only
// stops leftover processes of a crashed boot) and is not an error. The
// returned state is Halted (Reason says "forced: ..." when the graceful
// part did not finish), or Failed when the halt was cut short (the
// supervisor died during it).
func Halt(ctx context.Context, h home.Home, o HaltOptions) (*Info, error) {
	w, err := open(h, o.Name)
	if err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultHaltTimeout
	}
	l, err := w.Lock("halt")
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	obs, err := w.observe()
	if err != nil {
		return nil, err
	}
	switch obs.state {
	case Running:
		w.requestStop(ctx, obs, supervisor.OpHalt, o.Timeout)
	case Starting:
		// We hold the lock, so the start command is gone and the
		// supervisor boots on alone: SIGTERM makes it abandon the boot.
		if pr, err := proc.Open(obs.rec.Supervisor); err == nil {
			pr.Signal(unix.SIGTERM)
			pr.Close()
		}
		if !w.waitSupervisor(obs.rec.Supervisor, o.Timeout) {
			w.force(obs.rec, "the supervisor did not abandon the boot in time")
		}
	case Halting:
		// An earlier halt command died; its halt goes on.
		if !w.waitSupervisor(obs.rec.Supervisor, o.Timeout+supervisorGrace) {
			w.force(obs.rec, "the halt did not finish in time")
		}
	default:
		if err := w.stopOrphans(obs); err != nil {
			return nil, err
		}
	}
	if err := w.settle(); err != nil {
		return nil, err
	}
	return w.info(ctx, false)
}

// requestStop asks the supervisor to halt or kill the VM and waits for it
// to exit; a supervisor that does not answer, or does not exit, is killed
// with its VMM.
func (w *wsDir) requestStop(ctx context.Context, obs *observation, op supervisor.Op, timeout time.Duration) {
	cctx, cancel := context.WithTimeout(ctx, timeout+supervisorGrace)
	c := supervisor.NewClient(w.Dir)
	var err error
	if op == supervisor.OpKill {
		_, err = c.Kill(cctx)
	} else {
		_, err = c.Halt(cctx, timeout)
	}
	cancel()
	if ctx.Err() != nil {
		return // the caller gave up; the supervisor carries on
	}
	grace := supervisorGrace
	if err != nil {
		grace = time.Second // it did not answer: little reason to wait
	}
	if !w.waitSupervisor(obs.rec.Supervisor, grace) {
		why := "the supervisor did not exit after the VM stopped"
		if err != nil {
			why = fmt.Sprintf("the supervisor did not answer (%v)", err)
		}
		w.force(obs.rec, why)
	}
}

// force kills a boot's supervisor and VMM and records the workspace
// halted, saying why force was needed.
func (w *wsDir) force(rec *wsdir.Record, why string) {
	proc.KillAndWait(rec.Supervisor, 10*time.Second)
	proc.KillAndWait(rec.VMM, 10*time.Second)
	boot := rec.Boot
	w.EndBoot(boot, Halted, "forced: "+why)
}

// settle records the observed end of a boot whose processes are gone and
// removes its runtime files; the caller holds the lifecycle lock.
func (w *wsDir) settle() error {
	obs, err := w.observe()
	if err != nil {
		return err
	}
	if obs.state.Live() {
		return nil
	}
	if err := w.persistTruth(obs); err != nil {
		return err
	}
	if len(obs.orphans) == 0 {
		return w.CleanRuntime()
	}
	return nil
}

// Kill stops a workspace's VM at once (no sync: writes the guest had not
// flushed are lost), keeping the disk. It works even while another command
// holds the lock, so it can end a hung start or halt. Killing a workspace at
// rest is not an error.
func Kill(ctx context.Context, h home.Home, name string) (*Info, error) {
	w, err := open(h, name)
	if err != nil {
		return nil, err
	}
	l, err := w.Lock("kill")
	if err != nil && !errors.Is(err, ErrBusy) {
		return nil, err
	}
	defer l.Unlock()
	locked := err == nil
	obs, err := w.observe()
	if err != nil {
		return nil, err
	}
	if obs.state.Live() {
		if obs.state == Starting && obs.rec.Supervisor == nil {
			// The start command has not launched the supervisor yet.
			obs = w.awaitSupervisor(ctx, obs)
		}
		boot := obs.rec.Boot
		w.Update(func(r *wsdir.Record) error {
			if r.Boot != boot || !r.State.Live() {
				return wsdir.ErrSkip
			}
			r.KillRequested = true
			return nil
		})
		if obs.state == Running {
			w.requestStop(ctx, obs, supervisor.OpKill, 5*time.Second)
		}
		w.force(obs.rec, "killed")
	} else if locked {
		if err := w.stopOrphans(obs); err != nil {
			return nil, err
		}
	}
	if locked {
		if err := w.settle(); err != nil {
			return nil, err
		}
	}
	return w.info(ctx, false)
}

// awaitSupervisor waits (bounded) for a starting workspace to record its
// supervisor.
func (w *wsDir) awaitSupervisor(ctx context.Context, obs *observation) *observation {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		o, err := w.observe()
		if err != nil || o.rec.Supervisor != nil || o.state != Starting {
			if err == nil {
				return o
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return obs
}
