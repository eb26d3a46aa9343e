package workspace

import (
	"context"
	"errors"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/supervisor"
)

// JobOptions say what to run as a job: a command the workspace's
// supervisor runs on its own, its output appended to a capped log in the
// workspace folder (JobLog), so that it runs on when the process that
// started it exits or dies, and another process can wait for it.
type JobOptions struct {
	// Name is the workspace's name.
	Name string
	// Job names the job (1-40 of a-z, 0-9, '-'); a job that has ended
	// may be started again under its name, its log appended to.
	Job string
	// Argv, Env, Cwd and User are as ExecOptions'; a job has no stdin and
	// no terminal.
	Argv, Env []string
	Cwd, User string
	// MaxLog bounds the job's log file (0: supervisor.DefaultJobLog).
	MaxLog int64
}

// JobStatus is how a job runs or ended.
type JobStatus = supervisor.JobStatus

// ErrNoJob: the workspace's current boot never ran a job of that name.
var ErrNoJob = supervisor.ErrNoJob

// ErrJobRunning: a job of that name is still running in the workspace.
var ErrJobRunning = supervisor.ErrJobRunning

// StartJob starts a job in a running workspace and returns at once.
func StartJob(ctx context.Context, h home.Home, o JobOptions) (*JobStatus, error) {
	if err := ValidateName(o.Name); err != nil {
		return nil, err
	}
	if len(o.Argv) == 0 {
		return nil, errors.New("job: no command given")
	}
	w := newWS(h, o.Name)
	st, err := supervisor.NewClient(w.Dir).StartJob(ctx, supervisor.JobRequest{
		Name: o.Job, MaxLog: o.MaxLog,
		Exec: &channel.ExecRequest{Argv: o.Argv, Env: o.Env, Cwd: o.Cwd, User: o.User},
	})
	if err != nil {
		return nil, w.supervisorErr(ctx, "job", err)
	}
	return st, nil
}

// WaitJob waits until the job has ended and returns how (ErrNoJob when
// this boot never ran it). Ending ctx ends the wait, never the job; a
// workspace that stops ends its jobs without an exit status.
func WaitJob(ctx context.Context, h home.Home, name, job string) (*JobStatus, error) {
	return jobCall(ctx, h, name, func(c *supervisor.Client) (*JobStatus, error) { return c.WaitJob(ctx, job) })
}

// Job returns the job's status now, running or ended (ErrNoJob when this
// boot never ran it).
func Job(ctx context.Context, h home.Home, name, job string) (*JobStatus, error) {
	return jobCall(ctx, h, name, func(c *supervisor.Client) (*JobStatus, error) { return c.Job(ctx, job) })
}

func jobCall(ctx context.Context, h home.Home, name string, call func(*supervisor.Client) (*JobStatus, error)) (*JobStatus, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	w := newWS(h, name)
	st, err := call(supervisor.NewClient(w.Dir))
	if err != nil {
		return nil, w.supervisorErr(ctx, "job", err)
	}
	return st, nil
}

// JobLog is the path of the job's log in workspace name's folder.
func JobLog(h home.Home, name, job string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	if err := supervisor.CheckJob(&supervisor.JobRequest{Name: job}, false); err != nil {
		return "", err
	}
	return newWS(h, name).JobLog(job), nil
}
