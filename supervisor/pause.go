package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/microagent-dev/microagent/audit"
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
		// Running already, but an earlier resume may have left the
		// secrets out: a resume is how to try again.
		return s.rehydrate(ctx)
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
	return s.rehydrate(ctx)
}

// rehydrateWaits are the pauses before each further attempt to give the
// secrets back: a backend that is briefly down (Vault restarting, a
// helper's agent locked) gets a few seconds.
var rehydrateWaits = []time.Duration{time.Second, 2 * time.Second}

// rehydrate gives back the secrets a snapshot purged, if any are owed,
// trying again a little while on failure. Until it succeeds the record
// says the secrets are missing (status shows it as a reason) and every
// resume tries again; the error says so, it is never a silent success.
func (s *supervisor) rehydrate(ctx context.Context) error {
	if !s.purged {
		return nil
	}
	attempts := len(rehydrateWaits) + 1
	var err error
retry:
	for i := 0; ; i++ {
		if err = s.sec.rehydrate(ctx, s.vm.Client); err == nil {
			s.purged = false
			s.setSecretsMissing("")
			if i > 0 {
				s.log.Printf("rehydrate secrets: restored at attempt %d", i+1)
			}
			return nil
		}
		s.log.Printf("rehydrate secrets (attempt %d of %d): %v", i+1, attempts, err)
		if i == len(rehydrateWaits) || errors.Is(err, audit.ErrWithheld) || errors.Is(err, errAuditReplaced) {
			break // out of attempts, or the audit log refuses: waiting does not help
		}
		select {
		case <-ctx.Done():
			break retry
		case <-time.After(rehydrateWaits[i]):
		}
	}
	s.setSecretsMissing(err.Error())
	return fmt.Errorf("the guest runs again but without its secrets (/run/secrets is empty): %w; fix the secret's source and run \"microagent resume %s\" to try again", err, s.w.Name)
}

// setSecretsMissing records (or clears, with "") why the guest's secrets
// are missing.
func (s *supervisor) setSecretsMissing(why string) {
	s.w.Update(func(r *wsdir.Record) error {
		if r.Boot != s.boot || r.State != wsdir.Running || r.SecretsMissing == why {
			return wsdir.ErrSkip
		}
		r.SecretsMissing = why
		return nil
	})
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
