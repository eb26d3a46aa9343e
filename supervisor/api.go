package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/errcode"
	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// The supervisor's socket protocol (run/sup.sock): the client sends one
// channel.FrameHeader frame holding a Request, the supervisor answers with
// one channel.FrameReply frame holding a Reply. For exec and the copies the
// connection then carries the guest's exec or copy protocol unchanged (the
// supervisor splices it through); every other request ends with the reply.
//
// ProtocolVersion is sent in every request and reply. A supervisor refuses
// a request of another version with ErrVersion, except status, halt and
// kill, whose bodies never change, so an upgraded CLI can always stop a
// workspace that an older one started.
const ProtocolVersion = 1

// Op is a supervisor request's operation.
type Op string

// The operations.
const (
	OpStatus   Op = "status"
	OpExec     Op = channel.OpExec
	OpHalt     Op = "halt"
	OpKill     Op = "kill"
	OpPause    Op = "pause"
	OpResume   Op = "resume"
	OpSnapshot Op = "snapshot"
	OpCopyIn   Op = channel.OpCopyIn
	OpCopyOut  Op = channel.OpCopyOut
	OpEgress   Op = "egress"
	// OpJobStart starts a job (see JobRequest) and answers at once;
	// OpJobWait answers when the job has ended.
	OpJobStart Op = "job-start"
	OpJobWait  Op = "job-wait"
	// OpPortForward connects to a TCP port on the guest's loopback; after
	// the reply the connection carries that TCP connection's bytes (see
	// Client.PortForward). Added within protocol 1: a supervisor that
	// predates it refuses it as an unknown operation (ErrVersion).
	OpPortForward Op = channel.OpPortForward
)

// stable reports the operations every protocol version serves alike.
func (op Op) stable() bool { return op == OpStatus || op == OpHalt || op == OpKill }

// Request is one request to the supervisor.
type Request struct {
	// Version is the client's ProtocolVersion (0 from a client older than
	// versioning).
	Version int `json:"version,omitempty"`
	Op      Op  `json:"op"`
	// Exec is the body of OpExec.
	Exec *channel.ExecRequest `json:"exec,omitempty"`
	// Copy is the body of OpCopyIn and OpCopyOut.
	Copy *channel.CopyRequest `json:"copy,omitempty"`
	// Timeout bounds a halt's graceful part.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Tag names the snapshot to capture.
	Tag string `json:"tag,omitempty"`
	// Network is the body of OpEgress: the workspace's network with its
	// new egress policy (only the policy is applied).
	Network *wsdir.NetworkConfig `json:"network,omitempty"`
	// Job is the body of OpJobStart and OpJobWait.
	Job *JobRequest `json:"job,omitempty"`
	// PortForward is the body of OpPortForward.
	PortForward *channel.PortForwardRequest `json:"portForward,omitempty"`
}

// Reply is the supervisor's answer to a Request.
type Reply struct {
	// Version is the supervisor's ProtocolVersion (0 from a supervisor
	// older than versioning).
	Version int `json:"version,omitempty"`
	// Error is set when the request failed; Codes name the sentinel
	// errors it wraps (see package errcode), so errors.Is works on the
	// client's side.
	Error string         `json:"error,omitempty"`
	Codes []errcode.Code `json:"codes,omitempty"`
	// Data is the operation's result: a Status for status, halt and kill,
	// a wsdir.Snapshot for snapshot.
	Data json.RawMessage `json:"data,omitempty"`
}

// Err is the reply's error, rebuilt with its codes (nil when it succeeded).
func (r *Reply) Err() error {
	if r.Error == "" {
		return nil
	}
	return errcode.New(r.Error, r.Codes)
}

// errorReply is the reply carrying err.
func errorReply(err error) Reply {
	return Reply{Version: ProtocolVersion, Error: err.Error(), Codes: errcode.Codes(err)}
}

// Status is the data of a status reply, and of a halt's or kill's: the
// state the supervisor sees (the final one after a stop).
type Status struct {
	State  wsdir.State `json:"state"`
	Reason string      `json:"reason,omitempty"`
	// Execs counts the exec streams open through the supervisor,
	// Forwards the port-forward connections (at most MaxForwards).
	Execs    int `json:"execs"`
	Forwards int `json:"forwards,omitempty"`
	VMMPID   int `json:"vmmPid"`
}

// ErrVersion: the supervisor and its client speak different protocol
// versions (the workspace was started by another microagent).
var ErrVersion = errors.New("supervisor protocol version mismatch")

func init() {
	errcode.Register("supervisor_version", ErrVersion)
	errcode.Register("egress_fixed", vmm.ErrEgressFixed)
}

// versionError explains a mismatch to the user of workspace name.
func versionError(name string, theirs int) error {
	older := "an older"
	if theirs > ProtocolVersion {
		older = "a newer"
	}
	return fmt.Errorf("%w: workspace %s is run by the supervisor of %s microagent (protocol %d, this one speaks %d): halt and start it (\"microagent halt %s && microagent start %s\")",
		ErrVersion, name, older, theirs, ProtocolVersion, name, name)
}

// PlanVersion is the version of the boot plan (run/boot.json). A
// supervisor refuses a plan of a newer version than it knows.
const PlanVersion = 1

// Plan is what a start prepared for the supervisor, in run/boot.json:
// everything the boot needs besides the workspace folder itself.
type Plan struct {
	Version int `json:"version"`
	Boot    int `json:"boot"`
	// Backend names the VMM backend (vmm.Lookup); empty is the default.
	Backend string `json:"backend,omitempty"`
	// Machine is the guest to boot (its fields are the plan's own in the
	// JSON).
	guestboot.Machine
	// KernelID names the kernel by content ("sha256:..."): a snapshot
	// records it, and a resume on another kernel is refused.
	KernelID    string        `json:"kernelID"`
	BootTimeout time.Duration `json:"bootTimeout"`
	// Secrets are the declarations to resolve before the boot
	// (references only).
	Secrets *wsdir.SecretsConfig `json:"secrets,omitempty"`
	// Restore resumes a snapshot instead of booting.
	Restore *RestorePlan `json:"restore,omitempty"`
}

// RestorePlan is the part of a boot plan that resumes a saved machine.
type RestorePlan struct {
	// Dir holds the saved state: a snapshot folder (an in-place restore)
	// or the fork's restore folder (links to the snapshot's files).
	Dir string `json:"dir"`
	// SharedRAM: Dir/memory holds the RAM (else the state stream does).
	SharedRAM bool `json:"sharedRAM"`
	// Fork maps Dir/memory privately (copy-on-write, no copy at all) and
	// removes Dir once the guest runs; an in-place restore copies the RAM
	// into the workspace's own shared memory instead, so that its later
	// snapshots stay cheap.
	Fork bool `json:"fork,omitempty"`
	// Tag and Source name the snapshot, for logs and audit.
	Tag    string `json:"tag"`
	Source string `json:"source"`
}

// Ready is a supervisor's message on the readiness pipe (file descriptor
// 3 of its process, one JSON object a line): zero or more carrying only
// Warnings, then one with OK or Error.
type Ready struct {
	OK    bool           `json:"ok"`
	Error string         `json:"error,omitempty"`
	Codes []errcode.Code `json:"codes,omitempty"`
	// NotBooted says the start failed before the VM was launched (its
	// secrets could not be resolved): the workspace goes back to the
	// state it was in.
	NotBooted bool `json:"notBooted,omitempty"`
	// Warnings are lines for the start command's stderr.
	Warnings []string `json:"warnings,omitempty"`
}

// Final reports whether the message ends the exchange.
func (m Ready) Final() bool { return m.OK || m.Error != "" || len(m.Warnings) == 0 }

// Err is the boot's error, rebuilt with its codes (nil when it succeeded).
func (m Ready) Err() error {
	if m.Error == "" {
		return nil
	}
	return errcode.New(m.Error, m.Codes)
}
