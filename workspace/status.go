package workspace

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/internal/proc"
	"github.com/microagent-dev/microagent/supervisor"
	"github.com/microagent-dev/microagent/wsdir"

	"github.com/microagent-dev/microagent/home"
)

// Info is a workspace as it is now: its manifest and its observed state.
type Info struct {
	Name string `json:"name"`
	// State is observed, not just read: a live state whose processes are
	// gone is reported as Failed, with the reason.
	State State `json:"state"`
	// Reason explains Failed (and how Halted came about, when not by
	// request); for a running workspace, why its secrets are missing.
	Reason    string    `json:"reason,omitempty"`
	Image     string    `json:"image"`
	Digest    string    `json:"digest"`
	Resources Resources `json:"resources"`
	Profile   string    `json:"profile,omitempty"`
	Created   time.Time `json:"created"`
	// CreatedBy is Manifest.CreatedBy: who made the workspace, when not
	// the CLI.
	CreatedBy string `json:"createdBy,omitempty"`
	// Started and Stopped are the times of the last start and stop.
	Started time.Time `json:"started,omitzero"`
	Stopped time.Time `json:"stopped,omitzero"`
	// BootSeconds is how long the last boot took to the agent's answer.
	BootSeconds float64 `json:"bootSeconds,omitempty"`
	// SupervisorPID and VMMPID are set while the workspace is live.
	SupervisorPID int `json:"supervisorPid,omitempty"`
	VMMPID        int `json:"vmmPid,omitempty"`
	// Execs is the number of commands running through the supervisor
	// (known only when it answered).
	Execs int `json:"execs,omitempty"`
	// Forwards is the number of port-forward connections open through
	// the supervisor (DialPort; known only when it answered).
	Forwards int `json:"forwards,omitempty"`
	// DiskUsedBytes is the writable disk's allocated size on the host.
	DiskUsedBytes int64 `json:"diskUsedBytes"`
	// Dir is the workspace's folder.
	Dir string `json:"dir"`
	// Secrets are the workspace's secret declarations (references only).
	Secrets *SecretsConfig `json:"secrets,omitempty"`
	// Network is the workspace's network and its published ports (nil
	// only when the manifest's network is unreadable).
	Network *NetworkConfig `json:"network,omitempty"`
}

// Status returns the observed state of one workspace.
func Status(ctx context.Context, h home.Home, name string) (*Info, error) {
	w, err := open(h, name)
	if err != nil {
		return nil, err
	}
	return w.info(ctx, true)
}

// List returns every workspace, sorted by name. Creations and deletions in
// progress (and their leftovers after a crash) are not workspaces and are
// not listed.
func List(ctx context.Context, h home.Home) ([]*Info, error) {
	ents, err := os.ReadDir(h.Path(Dir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	var out []*Info
	for _, e := range ents {
		if !e.IsDir() || wsdir.Hidden(e.Name()) || ValidateName(e.Name()) != nil {
			continue
		}
		w := newWS(h, e.Name())
		inf, err := w.info(ctx, false)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue // deleted while we listed
			}
			return nil, err
		}
		out = append(out, inf)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ListRunning returns the live workspaces (starting, running, halting).
func ListRunning(ctx context.Context, h home.Home) ([]*Info, error) {
	all, err := List(ctx, h)
	if err != nil {
		return nil, err
	}
	var out []*Info
	for _, inf := range all {
		if inf.State.Live() {
			out = append(out, inf)
		}
	}
	return out, nil
}

// info combines the manifest with the observed state; ask also queries a
// running supervisor (for the number of execs, and to notice one that no
// longer answers).
func (w *wsDir) info(ctx context.Context, ask bool) (*Info, error) {
	m, err := w.ReadManifest()
	if err != nil {
		return nil, err
	}
	o, err := w.observe()
	if err != nil {
		return nil, err
	}
	inf := &Info{
		Name:      m.Name,
		State:     o.state,
		Reason:    o.reason,
		Image:     m.Image.Ref,
		Digest:    m.Image.Digest,
		Resources: m.Resources,
		Profile:   m.Profile,
		Created:   m.Created,
		CreatedBy: m.CreatedBy,
		Started:   o.rec.Started,
		Stopped:   o.rec.Stopped,
		Dir:       w.Path(),
	}
	if o.rec.Ready > 0 {
		inf.BootSeconds = o.rec.Ready.Seconds()
	}
	if o.state == Running && o.rec.Paused {
		inf.State = Paused
	}
	if sc, err := m.Secrets(); err == nil && !sc.Empty() {
		inf.Secrets = &sc
	}
	if nc, err := m.Network(); err == nil {
		inf.Network = &nc
	}
	if o.state.Live() {
		if o.rec.Supervisor != nil {
			inf.SupervisorPID = o.rec.Supervisor.PID
		}
		if o.rec.VMM != nil {
			inf.VMMPID = o.rec.VMM.PID
		}
	}
	var st syscall.Stat_t
	if syscall.Stat(w.DiskPath(), &st) == nil {
		inf.DiskUsedBytes = st.Blocks * 512
	}
	if ask && o.state == Running {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		s, err := supervisor.NewClient(w.Dir).Status(qctx)
		cancel()
		switch {
		case err == nil:
			inf.Execs, inf.Forwards = s.Execs, s.Forwards
			if s.State == Failed {
				// The supervisor is stopping a VM whose channel broke: say
				// so now, not "running" until the record catches up.
				inf.State, inf.Reason = Failed, s.Reason
			}
		case ctx.Err() == nil:
			// Look again: it may have stopped while we asked.
			if o2, err2 := w.observe(); err2 == nil && o2.state == Running {
				inf.Reason = fmt.Sprintf("the supervisor (pid %d) does not answer: %v", inf.SupervisorPID, err)
			} else if err2 == nil {
				inf.State, inf.Reason = o2.state, o2.reason
			}
		}
	}
	return inf, nil
}

// observation is the record checked against the processes it names.
type observation struct {
	rec    *wsdir.Record
	state  State
	reason string
	// orphans are processes of an earlier boot that still run although
	// nothing owns them (QEMU whose supervisor was killed and that has not
	// died with it, say): start, delete and gc stop them.
	orphans []*proc.ID
}

// observe reads the record and checks it against the processes: a live
// state needs a live supervisor (or, while starting, a live starting
// command).
func (w *wsDir) observe() (*observation, error) {
	r, err := w.ReadRecord()
	if err != nil {
		return nil, err
	}
	o := &observation{rec: r, state: r.State, reason: r.Reason}
	supAlive := r.Supervisor.Alive()
	switch r.State {
	case Starting:
		if supAlive {
			break
		}
		if r.Supervisor == nil && r.Owner.Alive() {
			break // the start command has not launched the supervisor yet
		}
		o.state = Failed
		if r.Supervisor != nil {
			o.reason = fmt.Sprintf("the supervisor (pid %d) exited during boot without recording why (killed?); see \"microagent logs %s\"", r.Supervisor.PID, w.Name)
		} else {
			o.reason = "the start command was interrupted before the VM was launched"
		}
	case Running, Halting:
		if supAlive {
			if r.VMM != nil && !r.VMM.Alive() {
				// QEMU is gone and the supervisor is recording why: give it
				// a moment, then report what it recorded.
				if w.waitSupervisor(r.Supervisor, 3*time.Second) {
					return w.observe()
				}
			}
			if r.State == Running && r.SecretsMissing != "" {
				o.reason = joinReason(o.reason, fmt.Sprintf("secrets missing: they were not given back after a snapshot or resume (%s); fix the source and run \"microagent resume %s\"", r.SecretsMissing, w.Name))
			}
			break
		}
		o.state = Failed
		what := "while running"
		if r.State == Halting {
			what = "while halting"
		}
		o.reason = fmt.Sprintf("the supervisor (pid %d) died %s without recording why (killed?)", r.Supervisor.PID, what)
		if r.Supervisor.BootID != proc.HostBootID() {
			o.reason = "the host restarted " + what
		}
		if r.KillRequested {
			o.state, o.reason = Halted, "killed"
		}
	}
	if !o.state.Live() {
		for _, p := range []*proc.ID{r.Supervisor, r.VMM} {
			if p.Alive() {
				o.orphans = append(o.orphans, p)
			}
		}
		if len(o.orphans) > 0 {
			o.reason = joinReason(o.reason, fmt.Sprintf("process %d of its last boot is still running: run \"microagent gc\"", o.orphans[0].PID))
		}
	}
	return o, nil
}

// waitSupervisor waits (bounded) for the supervisor to exit; it reports
// whether it did.
func (w *wsDir) waitSupervisor(p *proc.ID, limit time.Duration) bool {
	pr, err := proc.Open(p)
	if err != nil {
		return true
	}
	defer pr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	return pr.Wait(ctx) == nil
}

func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// cleanRuntime removes the runtime files of a boot that is over (stale
// sockets, the boot plan).
func (w *wsDir) cleanRuntime() error {
	dir := w.Path(wsdir.RunDir)
	if err := os.RemoveAll(dir); err != nil {
		return &wsdir.Error{Name: w.Name, Op: "clean runtime folder", Err: err}
	}
	return os.Mkdir(dir, wsdir.DirPerm)
}

// stopOrphans kills leftover processes of an earlier boot: those the
// record names and any other found by command line.
func (w *wsDir) stopOrphans(o *observation) error {
	for _, p := range o.orphans {
		if err := proc.KillAndWait(p, 10*time.Second); err != nil {
			return &wsdir.Error{Name: w.Name, Op: "stop leftover process", Err: err}
		}
	}
	return w.killStrays()
}

// killStrays stops every QEMU or supervisor process of this workspace,
// recorded or not (found by command line); the caller holds the lock and
// has found the workspace at rest, so any such process is an orphan that
// would otherwise hold the disk.
func (w *wsDir) killStrays() error {
	for _, p := range scanProcs(w.Home)[w.Path()] {
		if err := proc.KillAndWait(&p, 10*time.Second); err != nil {
			return &wsdir.Error{Name: w.Name, Op: "stop leftover process", Err: err}
		}
	}
	return nil
}

// persistTruth records an observed end (a dead supervisor) so the reason
// survives; the caller holds the lifecycle lock.
func (w *wsDir) persistTruth(o *observation) error {
	if o.state == o.rec.State {
		return nil
	}
	_, err := w.EndBoot(o.rec.Boot, o.state, o.reason)
	return err
}
