package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/errcode"
	"github.com/microagent-dev/microagent/wsdir"
)

// A job is an exec the supervisor runs on its own, its output appended to
// a capped log in the workspace folder and its exit status kept, so that
// it outlives the client that started it: a Kubernetes node's workload
// survives a restart of the node process, as a containerd shim keeps a
// container's process through a restart of containerd.

// MaxJobs bounds the jobs one supervisor keeps (running or ended).
const MaxJobs = 16

// DefaultJobLog and MaxJobLog bound a job's log: output past the bound is
// dropped with one line saying so, since the guest decides how much it
// prints.
const (
	DefaultJobLog = 16 << 20
	MaxJobLog     = 1 << 30
)

// jobNames are the names a job may have: they name its log file.
var jobNames = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// ErrNoJob: the supervisor runs no job of that name (it was never started
// in this boot).
var ErrNoJob = errors.New("no such job")

// ErrJobRunning: a job of that name is still running.
var ErrJobRunning = errors.New("job already running")

func init() {
	errcode.Register("job_not_found", ErrNoJob)
	errcode.Register("job_running", ErrJobRunning)
}

// JobRequest is the body of OpJobStart and OpJobWait.
type JobRequest struct {
	// Name names the job (and its log, wsdir.Dir.JobLog).
	Name string `json:"name"`
	// Exec is what OpJobStart runs; stdin is /dev/null and there is no
	// TTY.
	Exec *channel.ExecRequest `json:"exec,omitempty"`
	// MaxLog bounds the job's log file (0: DefaultJobLog).
	MaxLog int64 `json:"maxLog,omitempty"`
	// NoWait makes OpJobWait answer at once, with the job running or not.
	NoWait bool `json:"noWait,omitempty"`
}

// JobStatus is the data of OpJobStart's and OpJobWait's replies.
type JobStatus struct {
	Name    string    `json:"name"`
	Started time.Time `json:"started"`
	// Running is set while the job runs; Exit and Error are its end.
	Running bool                `json:"running"`
	Exit    *channel.ExitStatus `json:"exit,omitempty"`
	// Error says why the job ended without an exit status (the guest
	// stream was lost, the log could not be opened).
	Error string `json:"error,omitempty"`
}

// CheckJob validates a job request on either side of the socket.
func CheckJob(r *JobRequest, start bool) error {
	if r == nil || !jobNames.MatchString(r.Name) {
		return errors.New("job name: want 1-40 of a-z, 0-9 and '-', starting with a letter or digit")
	}
	if r.MaxLog < 0 || r.MaxLog > MaxJobLog {
		return fmt.Errorf("job %s: log bound %d is out of range (0-%d bytes)", r.Name, r.MaxLog, int64(MaxJobLog))
	}
	if start && (r.Exec == nil || len(r.Exec.Argv) == 0) {
		return fmt.Errorf("job %s: no command", r.Name)
	}
	if start && (r.Exec.Stdin || r.Exec.TTY) {
		return fmt.Errorf("job %s: a job has no stdin and no TTY", r.Name)
	}
	return nil
}

type job struct {
	status JobStatus // guarded by jobs.mu
	done   chan struct{}
}

type jobs struct {
	mu sync.Mutex
	m  map[string]*job
}

func (j *jobs) get(name string) (*job, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	jb, ok := j.m[name]
	return jb, ok
}

func (j *jobs) statusOf(jb *job) JobStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	return jb.status
}

// jobStart starts the job and answers at once with its status.
func (s *supervisor) jobStart(c net.Conn, req Request) {
	defer c.Close()
	st, err := s.startJob(req.Job)
	if err != nil {
		reply(c, errorReply(err))
		return
	}
	b, _ := json.Marshal(st)
	reply(c, Reply{Data: b})
}

func (s *supervisor) startJob(r *JobRequest) (JobStatus, error) {
	if err := CheckJob(r, true); err != nil {
		return JobStatus{}, err
	}
	s.mu.Lock()
	err := s.refuseStreams()
	s.mu.Unlock()
	if err != nil {
		return JobStatus{}, err
	}
	s.jobs.mu.Lock()
	if s.jobs.m == nil {
		s.jobs.m = map[string]*job{}
	}
	if old, ok := s.jobs.m[r.Name]; ok && old.status.Running {
		s.jobs.mu.Unlock()
		return JobStatus{}, errcode.With(ErrJobRunning, fmt.Sprintf("job %s is still running in workspace %s", r.Name, s.w.Name))
	}
	if _, ok := s.jobs.m[r.Name]; !ok && len(s.jobs.m) >= MaxJobs {
		s.jobs.mu.Unlock()
		return JobStatus{}, fmt.Errorf("workspace %s already keeps %d jobs, the most a supervisor keeps", s.w.Name, MaxJobs)
	}
	jb := &job{status: JobStatus{Name: r.Name, Started: time.Now().UTC(), Running: true}, done: make(chan struct{})}
	s.jobs.m[r.Name] = jb
	st := jb.status
	s.jobs.mu.Unlock()

	maxLog := r.MaxLog
	if maxLog == 0 {
		maxLog = DefaultJobLog
	}
	exec := *r.Exec
	go s.runJob(jb, exec, maxLog)
	return st, nil
}

// runJob runs the job to its end; the guest kills its process group when
// the stream closes (the VM stops).
func (s *supervisor) runJob(jb *job, req channel.ExecRequest, maxLog int64) {
	var es channel.ExitStatus
	err := func() error {
		f, err := os.OpenFile(s.w.JobLog(jb.status.Name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, wsdir.FilePerm)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := s.openStream(channel.Header{Op: channel.OpExec, Exec: &req})
		if err != nil {
			return err
		}
		defer st.Close()
		p := channel.NewProcess(context.Background(), st)
		w := newCappedLog(f, maxLog)
		es, err = p.Wait(w, w)
		return err
	}()
	s.jobs.mu.Lock()
	jb.status.Running = false
	if err != nil {
		jb.status.Error = err.Error()
		s.log.Printf("job %s ended without an exit status: %v", jb.status.Name, err)
	} else {
		jb.status.Exit = &es
		s.log.Printf("job %s exited %d", jb.status.Name, es.Code)
	}
	s.jobs.mu.Unlock()
	close(jb.done)
}

// jobWait answers with the job's status once it has ended; the client may
// go away at any time without affecting the job.
func (s *supervisor) jobWait(c net.Conn, req Request) {
	defer c.Close()
	if err := CheckJob(req.Job, false); err != nil {
		reply(c, errorReply(err))
		return
	}
	jb, ok := s.jobs.get(req.Job.Name)
	if !ok {
		reply(c, errorReply(errcode.With(ErrNoJob, fmt.Sprintf("workspace %s runs no job %s in this boot", s.w.Name, req.Job.Name))))
		return
	}
	if !req.Job.NoWait {
		gone := make(chan struct{})
		go func() {
			// The client sends nothing more: a read returns when it hangs up.
			var b [1]byte
			c.Read(b[:])
			close(gone)
		}()
		select {
		case <-jb.done:
		case <-gone:
			return
		}
	}
	// The status of the job waited for, even if another run of that name
	// has started since.
	b, _ := json.Marshal(s.jobs.statusOf(jb))
	reply(c, Reply{Data: b})
}
