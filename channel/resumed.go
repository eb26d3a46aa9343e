package channel

import (
	"context"
	"crypto/rand"
	"fmt"
	"regexp"
	"time"
)

// OpResumed (host to guest) tells the agent that the VM has just resumed,
// been restored from a snapshot, or been forked from one. The guest's clock
// stood still (or is a snapshot's) and its entropy pool is a copy of one
// other VMs may share, so the agent sets the clock, mixes in host entropy
// and reseeds the kernel's random generator before the host lets workloads
// go on. A fork also gets a new identity.
const OpResumed = "resumed"

// ResumedEntropy is how many bytes of host entropy a ResumedRequest carries.
const ResumedEntropy = 64

// machineIDPattern is the systemd machine-id format: 32 lowercase hex digits.
var machineIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ResumedRequest is the body of OpResumed.
type ResumedRequest struct {
	// UnixNano is the host's wall clock; Client.Resumed fills it when zero.
	UnixNano int64 `json:"unixNano"`
	// Entropy is ResumedEntropy bytes from the host's CSPRNG, credited to
	// the guest's pool before a reseed; Client.Resumed fills it when empty.
	Entropy []byte `json:"entropy"`
	// Hostname, when set, is the guest's new hostname (a fork).
	Hostname string `json:"hostname,omitempty"`
	// MachineID, when set, replaces /etc/machine-id if the image has one
	// (a fork): 32 lowercase hex digits.
	MachineID string `json:"machineId,omitempty"`
}

// Validate checks a request before it is sent or applied.
func (r *ResumedRequest) Validate() error {
	if r.UnixNano <= 0 {
		return fmt.Errorf("resumed: clock %d is not a time after 1970", r.UnixNano)
	}
	if len(r.Entropy) != ResumedEntropy {
		return fmt.Errorf("resumed: %d bytes of entropy, want %d", len(r.Entropy), ResumedEntropy)
	}
	if r.MachineID != "" && !machineIDPattern.MatchString(r.MachineID) {
		return fmt.Errorf("resumed: machine id %q is not 32 lowercase hex digits", r.MachineID)
	}
	if len(r.Hostname) > 64 {
		return fmt.Errorf("resumed: hostname of %d bytes exceeds 64", len(r.Hostname))
	}
	return nil
}

// NewMachineID returns a fresh random machine id (for a fork).
func NewMachineID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails on Linux (getrandom)
	// Version 4 UUID bits, as systemd-machine-id-setup writes them.
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x", b[:])
}

// Resumed tells the guest it has just been resumed, restored or forked. It
// fills the clock and the entropy when the request leaves them empty. An
// error means the guest may run with a stale clock or a shared random
// state: do not let workloads continue as if it were fresh.
func (c *Client) Resumed(ctx context.Context, req ResumedRequest) error {
	if req.UnixNano == 0 {
		req.UnixNano = time.Now().UnixNano()
	}
	if len(req.Entropy) == 0 {
		req.Entropy = make([]byte, ResumedEntropy)
		rand.Read(req.Entropy)
		defer clear(req.Entropy)
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	_, err := c.call(ctx, Header{Op: OpResumed, Resumed: &req})
	return err
}
