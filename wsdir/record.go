package wsdir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/internal/proc"
)

// State is a workspace's lifecycle state.
type State string

// The states. Starting, Running and Halting are live: a supervisor process
// exists. Created, Halted and Failed are at rest.
const (
	Created  State = "created"
	Starting State = "starting"
	Running  State = "running"
	Halting  State = "halting"
	Halted   State = "halted"
	Failed   State = "failed"
	// Paused is shown for a running workspace whose VM is paused; the
	// record keeps Running with its Paused flag set.
	Paused State = "paused"
)

// Live reports whether a supervisor process belongs to the state.
func (s State) Live() bool { return s == Starting || s == Running || s == Halting }

// recordVersion is the version of state.json.
const recordVersion = 1

// Record is state.json: what the workspace is doing, as last written. It is
// only a claim: the workspace package checks it against the processes it
// names.
type Record struct {
	Version int    `json:"version"`
	State   State  `json:"state"`
	Reason  string `json:"reason,omitempty"`
	// Boot counts starts; a supervisor only writes the record of its own
	// boot.
	Boot int `json:"boot"`
	// Owner is the command that is starting this boot, until the
	// supervisor takes over.
	Owner *proc.ID `json:"owner,omitempty"`
	// Supervisor and VMM are the processes of the current boot.
	Supervisor *proc.ID `json:"supervisor,omitempty"`
	VMM        *proc.ID `json:"vmm,omitempty"`
	// KillRequested is set by Kill before it stops the processes, so the
	// one who records the end says "killed" rather than "died".
	KillRequested bool          `json:"killRequested,omitempty"`
	Started       time.Time     `json:"started,omitzero"`
	Ready         time.Duration `json:"ready,omitempty"`
	Stopped       time.Time     `json:"stopped,omitzero"`
	// Paused: the running VM's CPUs are stopped (pause, or a snapshot
	// of a paused workspace).
	Paused bool `json:"paused,omitempty"`
	// SecretsMissing says why the running guest's /run/secrets is empty:
	// a snapshot purged it and giving the secrets back failed (a resume
	// retries). Never a value: the resolution error's reason.
	SecretsMissing string `json:"secretsMissing,omitempty"`
}

// ReadRecord reads state.json; a workspace that never started has none
// and is Created.
func (w *Dir) ReadRecord() (*Record, error) {
	b, err := os.ReadFile(w.Path(RecordFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &Record{Version: recordVersion, State: Created}, nil
		}
		return nil, &Error{Name: w.Name, Err: err}
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("workspace %s: state file %s is corrupt (%v): run \"microagent gc\"", w.Name, w.Path(RecordFile), err)
	}
	if r.Version > recordVersion {
		return nil, fmt.Errorf("workspace %s: state file version %d is newer than this microagent understands: upgrade microagent", w.Name, r.Version)
	}
	return &r, nil
}

// WriteRecord replaces the record at path (a folder being assembled has no
// other writer; everyone else goes through Update).
func WriteRecord(path string, r *Record) error {
	r.Version = recordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(b, '\n'))
}

// ErrSkip makes Update leave the record unchanged.
var ErrSkip = errors.New("skip")

// Update changes state.json under state.lock, so writers never lose each
// other's changes. fn returning ErrSkip leaves the file as it is. Readers
// need no lock: the file is replaced atomically.
func (w *Dir) Update(fn func(r *Record) error) (*Record, error) {
	f, err := os.OpenFile(w.Path(recordLock), os.O_RDWR|os.O_CREATE, FilePerm)
	if err != nil {
		return nil, &Error{Name: w.Name, Op: "state lock", Err: err}
	}
	defer f.Close()
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, &Error{Name: w.Name, Op: "state lock", Err: err}
	}
	r, err := w.ReadRecord()
	if err != nil {
		return nil, err
	}
	if err := fn(r); err != nil {
		if errors.Is(err, ErrSkip) {
			return r, nil
		}
		return r, err
	}
	if err := WriteRecord(w.Path(RecordFile), r); err != nil {
		return nil, &Error{Name: w.Name, Op: "write state", Err: err}
	}
	return r, nil
}

// EndBoot records how boot ended: state st with reason, no owner, the stop
// time. It changes nothing when the record is of another boot or no longer
// live (someone recorded the end first), and a requested kill wins over
// any other account ("killed"). Everyone who ends a boot (the supervisor,
// a failed start, a forced halt, an observed crash) goes through it.
func (w *Dir) EndBoot(boot int, st State, reason string) (*Record, error) {
	return w.Update(func(r *Record) error {
		if r.Boot != boot || !r.State.Live() {
			return ErrSkip
		}
		if r.KillRequested {
			st, reason = Halted, "killed"
		}
		r.State, r.Reason, r.Owner = st, reason, nil
		if r.Stopped.IsZero() || r.Stopped.Before(r.Started) {
			r.Stopped = time.Now().UTC()
		}
		return nil
	})
}
