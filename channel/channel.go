// Package channel is the protocol between the host and the guest agent. Both
// sides import it, so the wire format is defined once.
//
// The transport is a virtio-serial port: a byte stream that survives host
// disconnects (the guest sees EOF and waits) and may hold stale bytes from an
// earlier session (after a snapshot restore, say). Every connection therefore
// starts with a handshake line carrying a fresh nonce: the host sends
// "MICROAGENT/<version> <nonce>\n", the guest answers with the same line plus
// " OK", each side discarding whatever came before. Then both run a yamux
// session over the port. The host opens one stream per request; the first frame
// of a stream is a JSON Header naming the operation.
package channel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/microagent-dev/microagent/errcode"
)

// Version is the protocol version in the handshake line. Version 2 seals
// secret values (an agent of version 1 would wait for plaintext).
const Version = 2

// PortName is the name of the guest's virtio-serial port.
const PortName = "microagent.0"

// MaxFrame bounds one frame's payload, so a corrupt length never makes a side
// allocate without limit.
const MaxFrame = 1 << 20

// Operations named in a stream's Header.
const (
	OpHello    = "hello"    // configure the guest session, learn the boot status
	OpExec     = "exec"     // run a process
	OpShutdown = "shutdown" // stop processes and sync disks before power-off
)

// FrameType tags each frame on a stream.
type FrameType byte

// Frame types. Host to guest: Header, Stdin, StdinEOF, Signal, Resize.
// Guest to host: Reply, Stdout, Stderr, Exit.
const (
	FrameHeader FrameType = iota + 1
	FrameReply
	FrameStdin
	FrameStdinEOF
	FrameSignal
	FrameResize
	FrameStdout
	FrameStderr
	FrameExit
)

// Header is the first frame of every stream.
type Header struct {
	Op    string        `json:"op"`
	Hello *HelloRequest `json:"hello,omitempty"`
	Exec  *ExecRequest  `json:"exec,omitempty"`
	// Secrets is the body of OpSecrets, Fetch of OpFetch.
	Secrets *SecretsRequest `json:"secrets,omitempty"`
	Fetch   *FetchRequest   `json:"fetch,omitempty"`
	// Copy is the body of OpCopyIn and OpCopyOut.
	Copy *CopyRequest `json:"copy,omitempty"`
	// Resumed is the body of OpResumed.
	Resumed *ResumedRequest `json:"resumed,omitempty"`
	// PortForward is the body of OpPortForward.
	PortForward *PortForwardRequest `json:"portForward,omitempty"`
}

// HelloRequest configures the guest after each connection.
type HelloRequest struct {
	// Hostname for the guest (set once per boot).
	Hostname string `json:"hostname,omitempty"`
	// Env is the image's environment, the base of every process's.
	Env []string `json:"env,omitempty"`
	// User and WorkingDir are the image's defaults for processes.
	User       string `json:"user,omitempty"`
	WorkingDir string `json:"workingDir,omitempty"`
	// UnixNano is the host's clock; the guest sets its clock from it.
	UnixNano int64 `json:"unixNano"`
	// Network, when set, is applied once per boot; nil leaves the guest's
	// network alone (only lo is up).
	Network *NetworkConfig `json:"network,omitempty"`
}

// HelloReply reports the guest's state.
type HelloReply struct {
	// Version is the agent's protocol version.
	Version int `json:"version"`
	// BootError, when set, is the boot step that failed and why; the guest
	// cannot run workloads.
	BootError string `json:"bootError,omitempty"`
	// Uptime is the guest's uptime when it answered.
	Uptime time.Duration `json:"uptime"`
}

// ExecRequest starts a process.
type ExecRequest struct {
	Argv []string `json:"argv"`
	// Env entries override the image's.
	Env []string `json:"env,omitempty"`
	// Cwd overrides the image's WorkingDir.
	Cwd string `json:"cwd,omitempty"`
	// User overrides the image's User ("name", "uid", "uid:gid", "name:group").
	User string `json:"user,omitempty"`
	// Stdin says the host will send stdin frames; without it stdin is /dev/null.
	Stdin bool `json:"stdin,omitempty"`
	// TTY runs the process on a pseudo-terminal of Rows x Cols.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Timeout kills the process group after this long (0: none).
	Timeout time.Duration `json:"timeout,omitempty"`
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit code; 128+signal when killed by a signal.
	Code int `json:"code"`
	// Signal is the signal that killed the process, or 0.
	Signal int `json:"signal,omitempty"`
	// TimedOut is set when the request's Timeout killed it.
	TimedOut bool `json:"timedOut,omitempty"`
	// Error is set when the process could not be started (Code is then 126
	// or 127, as a shell would return).
	Error string `json:"error,omitempty"`
}

// Reply is the answer to a request that is not a process.
type Reply struct {
	Error string `json:"error,omitempty"`
	// Codes name the sentinel errors Error wraps (package errcode), so
	// errors.Is works on the host for what failed in the guest.
	Codes []errcode.Code  `json:"codes,omitempty"`
	Hello *HelloReply     `json:"hello,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// ErrorReply is the reply carrying err, with its codes.
func ErrorReply(err error) Reply { return Reply{Error: err.Error(), Codes: errcode.Codes(err)} }

// Err is the reply's error, rebuilt with its codes (nil when it succeeded).
func (r *Reply) Err() error {
	if r.Error == "" {
		return nil
	}
	return errcode.New(r.Error, r.Codes)
}

// WriteFrame writes one frame. Callers serialise writes on a stream.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("channel: frame of %d bytes exceeds %d", len(payload), MaxFrame)
	}
	var hdr [5]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err := w.Write(payload)
	return err
}

// WriteJSON writes v as one frame of type t.
func WriteJSON(w io.Writer, t FrameType, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("channel: encode frame: %w", err)
	}
	return WriteFrame(w, t, b)
}

// ErrFrameTooLarge is returned by ReadFrame for a length over MaxFrame.
var ErrFrameTooLarge = errors.New("channel: frame too large")

// ReadFrame reads one frame; buf is reused when large enough.
func ReadFrame(r io.Reader, buf []byte) (FrameType, []byte, error) {
	return ReadFrameLimit(r, buf, MaxFrame)
}

// growStep is the most ReadFrameLimit allocates ahead of the bytes that
// arrived: a length field is the peer's claim, and a peer that announces a
// megabyte and sends nothing (on a thousand streams at once) must not make
// this side hold a megabyte for each.
const growStep = 64 << 10

// ReadFrameLimit is ReadFrame for frames of at most limit bytes (a stream's
// small first frame, say); a longer one fails with ErrFrameTooLarge before
// any of it is read. buf is reused when large enough; otherwise the buffer
// grows only as the payload's bytes arrive, doubling from growStep.
func ReadFrameLimit(r io.Reader, buf []byte, limit int) (FrameType, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n > min(limit, MaxFrame) {
		return 0, nil, ErrFrameTooLarge
	}
	if cap(buf) >= n {
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, nil, unexpected(err)
		}
		return FrameType(hdr[0]), buf, nil
	}
	buf = buf[:0]
	for len(buf) < n {
		want := min(n-len(buf), max(growStep, len(buf)))
		buf = slices.Grow(buf, want)
		got, err := io.ReadFull(r, buf[len(buf):len(buf)+want])
		buf = buf[:len(buf)+got]
		if err != nil {
			return 0, nil, unexpected(err)
		}
	}
	return FrameType(hdr[0]), buf, nil
}

// unexpected turns the EOF of a frame cut short into io.ErrUnexpectedEOF:
// only a frame boundary may end the stream cleanly.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ReadJSON reads one frame, checks its type and decodes it into v.
func ReadJSON(r io.Reader, want FrameType, v any) error {
	t, b, err := ReadFrame(r, nil)
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("channel: got frame type %d, want %d", t, want)
	}
	return jsonUnmarshal(b, v)
}

// YamuxConfig is the session configuration both sides use. Keepalives are off:
// a paused or snapshotted guest must not look dead, and liveness is the VMM
// process's business. Write timeouts are generous because an emulated (TCG)
// guest can stall for seconds under load.
func YamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = 2 * time.Minute
	c.StreamOpenTimeout = 2 * time.Minute
	c.StreamCloseTimeout = streamCloseTimeout
	c.MaxStreamWindowSize = 1 << 20
	c.LogOutput = io.Discard
	return c
}

// streamCloseTimeout is how long a closed stream waits for the peer's close
// before yamux drops it.
const streamCloseTimeout = 30 * time.Second

// hostYamuxConfig is YamuxConfig with the host's bound on streams the guest
// may have waiting (see guestBacklog).
func hostYamuxConfig() *yamux.Config {
	c := YamuxConfig()
	c.AcceptBacklog = guestBacklog
	return c
}

func jsonUnmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("channel: decode frame: %w", err)
	}
	return nil
}
