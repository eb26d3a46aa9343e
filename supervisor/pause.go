package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// snapshotter is the running machine's snapshot interface.
func (s *supervisor) snapshotter() (vmm.Snapshotter, error) {
	sn, ok := s.vm.Machine.(vmm.Snapshotter)
	if !ok {
		return nil, errors.New("this VMM backend cannot pause or snapshot a machine")
	}
	return sn, nil
}

// pause stops the guest's CPUs.
func (s *supervisor) pause(ctx context.Context) error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if s.isPaused() {
		return nil
	}
	sn, err := s.snapshotter()
	if err != nil {
		return err
	}
	if err := sn.Pause(ctx); err != nil {
		return err
	}
	s.setPaused(true)
	s.log.Printf("paused")
	return nil
}

// resume runs the guest again and then brings it up to date.
func (s *supervisor) resume(ctx context.Context) error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	return s.resumeLocked(ctx)
}

func (s *supervisor) resumeLocked(ctx context.Context) error {
	if !s.isPaused() {
		return nil
	}
	sn, err := s.snapshotter()
	if err != nil {
		return err
	}
	if err := sn.Resume(ctx); err != nil {
		return err
	}
	s.setPaused(false)
	s.log.Printf("resumed")
	return s.afterResume(ctx)
}

// resumed brings a resumed, restored or forked guest up to date: its clock
// (it stood still, or is the snapshot's) and its random generator (a copy
// that other VMs of the snapshot share), and for a fork a new identity.
// Until that is confirmed the guest must not be treated as ready.
func (s *supervisor) resumed(ctx context.Context, fork bool) error {
	req := channel.ResumedRequest{}
	if fork {
		req.Hostname, req.MachineID = s.w.Name, channel.NewMachineID()
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.vm.Client.Resumed(rctx, req); err != nil {
		return fmt.Errorf("the resumed guest did not confirm its new clock and entropy: %w", err)
	}
	return nil
}

// afterResume updates the guest (see resumed) and gives back the secrets a
// snapshot purged.
func (s *supervisor) afterResume(ctx context.Context) error {
	if err := s.resumed(ctx, false); err != nil {
		return err
	}
	if !s.purged {
		return nil
	}
	if err := s.sec.rehydrate(ctx, s.vm.Client); err != nil {
		s.log.Printf("rehydrate secrets: %v", err)
		return fmt.Errorf("the guest runs again, but its secrets could not be restored: %w", err)
	}
	s.purged = false
	return nil
}

func (s *supervisor) isPaused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paused
}

func (s *supervisor) setPaused(p bool) {
	s.mu.Lock()
	s.paused = p
	s.mu.Unlock()
	s.w.Update(func(r *wsdir.Record) error {
		if r.Boot != s.boot || r.State != wsdir.Running {
			return wsdir.ErrSkip
		}
		r.Paused = p
		return nil
	})
}
