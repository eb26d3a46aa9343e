package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// go-qemu's qmp.SocketMonitor cannot take a connected net.Conn (it only
// dials a path), has no context on its commands, blocks its reader when an
// event listener stops reading, and splits input with a 64 KiB
// bufio.Scanner (query-qmp-schema is larger); its package also pulls in
// go-libvirt. Monitor is a small client over an already-connected net.Conn
// instead.

// eventBuffer is how many events a subscriber may fall behind before newer
// events are dropped for it (the reader never blocks on a slow subscriber).
const eventBuffer = 64

// Monitor is a QMP client on one connection. It is safe for concurrent use:
// commands carry ids, so replies are matched even when a caller gives up on
// a command before QEMU answers it.
type Monitor struct {
	conn     net.Conn
	greeting Greeting
	observe  func(Event)

	wmu sync.Mutex // serialises writes to conn

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan message
	subs    map[chan Event]struct{}

	closed   chan struct{}
	closeErr error // set before closed is closed
	once     sync.Once
}

// Event is an asynchronous QMP event, such as SHUTDOWN, STOP or MIGRATION.
type Event struct {
	// Event is the event name.
	Event string
	// Data holds the event's arguments.
	Data map[string]any
	// Time is when QEMU emitted the event.
	Time time.Time
}

// VersionInfo is QEMU's version as announced in the QMP greeting.
type VersionInfo struct {
	// QEMU holds the version numbers.
	QEMU struct {
		Major int `json:"major"`
		Minor int `json:"minor"`
		Micro int `json:"micro"`
	} `json:"qemu"`
	// Package is the distribution's package version, if any.
	Package string `json:"package"`
}

// String returns "major.minor.micro".
func (v VersionInfo) String() string {
	return fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
}

// Greeting is what QEMU announces when a QMP client connects.
type Greeting struct {
	// Version is QEMU's version.
	Version VersionInfo `json:"version"`
	// Capabilities lists optional protocol features (such as "oob").
	Capabilities []string `json:"capabilities"`
}

// Error is an error returned by QEMU for one QMP command.
type Error struct {
	// Command is the command that failed.
	Command string
	// Class is QEMU's error class, such as "GenericError" or "CommandNotFound".
	Class string
	// Desc is QEMU's description of the error.
	Desc string
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("qmp %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// ErrMonitorClosed is returned by commands on a closed QMP connection, for
// instance after QEMU exited.
var ErrMonitorClosed = errors.New("QMP connection closed")

// message is any line QEMU sends: greeting, reply or event.
type message struct {
	QMP       *Greeting       `json:"QMP"`
	ID        *uint64         `json:"id"`
	Return    json.RawMessage `json:"return"`
	Error     *qmpError       `json:"error"`
	Event     string          `json:"event"`
	Data      map[string]any  `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

type request struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        uint64 `json:"id"`
}

// DialMonitor connects to a QMP socket at path (to re-attach to a QEMU that
// another process started) and completes the handshake.
func DialMonitor(ctx context.Context, path string) (*Monitor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to QMP socket %s: %w", path, err)
	}
	return NewMonitor(ctx, conn)
}

// NewMonitor reads QEMU's greeting from conn, negotiates capabilities and
// starts reading replies and events. It takes ownership of conn. ctx bounds
// the handshake only.
func NewMonitor(ctx context.Context, conn net.Conn) (*Monitor, error) {
	return newMonitor(ctx, conn, nil)
}

func newMonitor(ctx context.Context, conn net.Conn, observe func(Event)) (*Monitor, error) {
	m := &Monitor{
		conn:    conn,
		observe: observe,
		pending: make(map[uint64]chan message),
		subs:    make(map[chan Event]struct{}),
		closed:  make(chan struct{}),
	}
	// Unblock the handshake reads and writes when ctx ends.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	dec := json.NewDecoder(conn)
	err := m.handshake(dec)
	if !stop() || err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("QMP handshake: %w", ctx.Err())
		}
		return nil, fmt.Errorf("QMP handshake: %w", err)
	}
	go m.read(dec)
	return m, nil
}

func (m *Monitor) handshake(dec *json.Decoder) error {
	var g message
	if err := dec.Decode(&g); err != nil {
		return fmt.Errorf("reading greeting: %w", err)
	}
	if g.QMP == nil {
		return errors.New("the peer did not send a QMP greeting")
	}
	m.greeting = *g.QMP
	if err := json.NewEncoder(m.conn).Encode(request{Execute: "qmp_capabilities"}); err != nil {
		return fmt.Errorf("sending qmp_capabilities: %w", err)
	}
	for {
		var r message
		if err := dec.Decode(&r); err != nil {
			return fmt.Errorf("reading qmp_capabilities reply: %w", err)
		}
		if r.Event != "" {
			continue // events may precede the reply
		}
		if r.Error != nil {
			return &Error{Command: "qmp_capabilities", Class: r.Error.Class, Desc: r.Error.Desc}
		}
		return nil
	}
}

// read dispatches replies to waiting commands and events to subscribers
// until the connection ends.
func (m *Monitor) read(dec *json.Decoder) {
	var err error
	for {
		var msg message
		if err = dec.Decode(&msg); err != nil {
			break
		}
		if msg.Event != "" {
			m.dispatch(msg)
			continue
		}
		if msg.ID == nil {
			continue // a reply we cannot match (we always send ids)
		}
		m.mu.Lock()
		ch := m.pending[*msg.ID]
		delete(m.pending, *msg.ID)
		m.mu.Unlock()
		if ch != nil {
			ch <- msg // buffered 1: never blocks
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	m.shutdown(err)
}

func (m *Monitor) dispatch(msg message) {
	ev := Event{
		Event: msg.Event,
		Data:  msg.Data,
		Time:  time.Unix(msg.Timestamp.Seconds, msg.Timestamp.Microseconds*1000),
	}
	if m.observe != nil {
		m.observe(ev)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.subs {
		select {
		case ch <- ev:
		default: // subscriber is behind: drop rather than stall QMP
		}
	}
}

// shutdown records why the connection ended and wakes everyone waiting.
func (m *Monitor) shutdown(err error) {
	m.once.Do(func() {
		if err != nil {
			m.closeErr = fmt.Errorf("%w: %v", ErrMonitorClosed, err)
		} else {
			m.closeErr = ErrMonitorClosed
		}
		m.conn.Close()
		close(m.closed)
		m.mu.Lock()
		for ch := range m.subs {
			close(ch)
			delete(m.subs, ch)
		}
		m.mu.Unlock()
	})
}

// Greeting returns what QEMU announced on connect.
func (m *Monitor) Greeting() Greeting { return m.greeting }

// Done is closed when the connection has ended.
func (m *Monitor) Done() <-chan struct{} { return m.closed }

// Close ends the connection. QEMU keeps running.
func (m *Monitor) Close() error {
	m.shutdown(nil)
	return nil
}

// Execute runs a QMP command with args (nil, or a value that encodes to a
// JSON object) and decodes its "return" value into out (nil to ignore it).
// A command QEMU rejects yields an *Error.
func (m *Monitor) Execute(ctx context.Context, cmd string, args any, out any) error {
	msg, err := m.execute(ctx, cmd, args)
	if err != nil {
		return err
	}
	if out != nil && len(msg.Return) > 0 {
		if err := json.Unmarshal(msg.Return, out); err != nil {
			return fmt.Errorf("qmp %s: decoding reply: %w", cmd, err)
		}
	}
	return nil
}

func (m *Monitor) execute(ctx context.Context, cmd string, args any) (message, error) {
	ch := make(chan message, 1)
	m.mu.Lock()
	select {
	case <-m.closed:
		m.mu.Unlock()
		return message{}, fmt.Errorf("qmp %s: %w", cmd, m.closeErr)
	default:
	}
	m.nextID++
	id := m.nextID
	m.pending[id] = ch
	m.mu.Unlock()
	forget := func() {
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
	}

	line, err := json.Marshal(request{Execute: cmd, Arguments: args, ID: id})
	if err != nil {
		forget()
		return message{}, fmt.Errorf("qmp %s: encoding arguments: %w", cmd, err)
	}
	line = append(line, '\n')
	m.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		m.conn.SetWriteDeadline(dl)
	}
	_, err = m.conn.Write(line)
	m.conn.SetWriteDeadline(time.Time{})
	m.wmu.Unlock()
	if err != nil {
		forget()
		// A partial write leaves the stream unusable.
		m.shutdown(err)
		return message{}, fmt.Errorf("qmp %s: %w", cmd, err)
	}

	select {
	case msg := <-ch:
		if msg.Error != nil {
			return msg, &Error{Command: cmd, Class: msg.Error.Class, Desc: msg.Error.Desc}
		}
		return msg, nil
	case <-ctx.Done():
		forget()
		return message{}, fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	case <-m.closed:
		// The reply may have raced with the close.
		select {
		case msg := <-ch:
			if msg.Error != nil {
				return msg, &Error{Command: cmd, Class: msg.Error.Class, Desc: msg.Error.Desc}
			}
			return msg, nil
		default:
		}
		return message{}, fmt.Errorf("qmp %s: %w", cmd, m.closeErr)
	}
}

// Subscribe returns a channel that receives QMP events from now on, and a
// function that ends the subscription. The channel is closed when the
// subscription or the connection ends. A subscriber that falls more than a
// few dozen events behind loses the newer ones; QMP itself never stalls.
func (m *Monitor) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, eventBuffer)
	m.mu.Lock()
	select {
	case <-m.closed:
		close(ch)
	default:
		m.subs[ch] = struct{}{}
	}
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.subs[ch]; ok {
			delete(m.subs, ch)
			close(ch)
		}
	}
}
