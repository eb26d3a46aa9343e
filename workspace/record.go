package workspace

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
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

// record is state.json: what the workspace is doing, as last written. It is
// only a claim: observe checks it against the processes it names.
type record struct {
	Version int    `json:"version"`
	State   State  `json:"state"`
	Reason  string `json:"reason,omitempty"`
	// Boot counts starts; a supervisor only writes the record of its own
	// boot.
	Boot int `json:"boot"`
	// Owner is the command that is starting this boot, until the
	// supervisor takes over.
	Owner *procID `json:"owner,omitempty"`
	// Supervisor and VMM are the processes of the current boot.
	Supervisor *procID `json:"supervisor,omitempty"`
	VMM        *procID `json:"vmm,omitempty"`
	// KillRequested is set by Kill before it stops the processes, so the
	// one who records the end says "killed" rather than "died".
	KillRequested bool          `json:"killRequested,omitempty"`
	Started       time.Time     `json:"started,omitzero"`
	Ready         time.Duration `json:"ready,omitempty"`
	Stopped       time.Time     `json:"stopped,omitzero"`
	// Paused: the running VM's CPUs are stopped (pause, or a snapshot
	// of a paused workspace).
	Paused bool `json:"paused,omitempty"`
}

func (w *wsDir) readRecord() (*record, error) {
	b, err := os.ReadFile(w.path(recordFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &record{Version: recordVersion, State: Created}, nil
		}
		return nil, fmt.Errorf("workspace %s: %w", w.name, err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("workspace %s: state file %s is corrupt (%v): run \"microagent gc\"", w.name, w.path(recordFile), err)
	}
	if r.Version > recordVersion {
		return nil, fmt.Errorf("workspace %s: state file version %d is newer than this microagent understands: upgrade microagent", w.name, r.Version)
	}
	return &r, nil
}

func writeRecord(path string, r *record) error {
	r.Version = recordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// errSkip makes update leave the record unchanged.
var errSkip = errors.New("skip")

// update changes state.json under state.lock, so writers never lose each
// other's changes. fn returning errSkip leaves the file as it is. Readers
// need no lock: the file is replaced atomically.
func (w *wsDir) update(fn func(r *record) error) (*record, error) {
	f, err := os.OpenFile(w.path(recordLock), os.O_RDWR|os.O_CREATE, filePerm)
	if err != nil {
		return nil, fmt.Errorf("workspace %s: state lock: %w", w.name, err)
	}
	defer f.Close()
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("workspace %s: state lock: %w", w.name, err)
	}
	r, err := w.readRecord()
	if err != nil {
		return nil, err
	}
	if err := fn(r); err != nil {
		if errors.Is(err, errSkip) {
			return r, nil
		}
		return r, err
	}
	if err := writeRecord(w.path(recordFile), r); err != nil {
		return nil, fmt.Errorf("workspace %s: write state: %w", w.name, err)
	}
	return r, nil
}
