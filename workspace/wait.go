package workspace

import (
	"context"
	"fmt"
	"time"

	"github.com/microagent-dev/microagent/internal/proc"

	"github.com/microagent-dev/microagent/home"
)

// WaitOptions say what to wait for.
type WaitOptions struct {
	Name string
	// Running waits until the workspace is running (for a start made by
	// another command) instead of until it has stopped.
	Running bool
}

// Wait blocks until the workspace has stopped (is at rest: halted, failed
// or created), or with o.Running until it runs, and returns its state. With
// o.Running, a workspace that comes to rest instead yields an error
// wrapping ErrNotRunning.
func Wait(ctx context.Context, h home.Home, o WaitOptions) (*Info, error) {
	w, err := open(h, o.Name)
	if err != nil {
		return nil, err
	}
	for {
		obs, err := w.observe()
		if err != nil {
			return nil, err
		}
		switch {
		case o.Running && obs.state == Running:
			return w.info(ctx, false)
		case !obs.state.Live():
			inf, err := w.info(ctx, false)
			if err == nil && o.Running {
				err = fmt.Errorf("%w: %s is %s", ErrNotRunning, w.Name, inf.State)
				if inf.Reason != "" {
					err = fmt.Errorf("%w (%s)", err, inf.Reason)
				}
			}
			return inf, err
		}
		// Live: wait for the supervisor to exit (an event), or poll
		// while starting, when "running" is only a record change.
		if !o.Running && obs.rec.Supervisor != nil {
			if pr, err := proc.Open(obs.rec.Supervisor); err == nil {
				err = pr.Wait(ctx)
				pr.Close()
				if err != nil {
					return nil, err
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
