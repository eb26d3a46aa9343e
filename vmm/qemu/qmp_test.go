package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeQEMU is the server end of a QMP connection, driven by the test.
type fakeQEMU struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
}

type fakeReq struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

func (f *fakeQEMU) send(format string, a ...any) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	fmt.Fprintf(f.conn, format+"\r\n", a...)
}

func (f *fakeQEMU) recv() (fakeReq, error) {
	line, err := f.r.ReadBytes('\n')
	if err != nil {
		return fakeReq{}, err
	}
	var r fakeReq
	err = json.Unmarshal(line, &r)
	return r, err
}

// newFake returns a handshaken Monitor and the fake QEMU behind it.
func newFake(t *testing.T) (*Monitor, *fakeQEMU) {
	t.Helper()
	client, server := net.Pipe()
	f := &fakeQEMU{t: t, conn: server, r: bufio.NewReader(server)}
	go func() {
		f.send(`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}`)
		if r, err := f.recv(); err != nil || r.Execute != "qmp_capabilities" {
			t.Errorf("handshake: %+v %v", r, err)
			return
		}
		f.send(`{"return": {}}`)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := NewMonitor(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); server.Close() })
	return m, f
}

func TestMonitorHandshake(t *testing.T) {
	m, _ := newFake(t)
	g := m.Greeting()
	if g.Version.String() != "7.2.22" || g.Version.Package != "Debian" || len(g.Capabilities) != 1 {
		t.Errorf("greeting %+v", g)
	}

	// A peer that is not QMP.
	client, server := net.Pipe()
	go fmt.Fprintf(server, "{\"hello\": 1}\n")
	if _, err := NewMonitor(context.Background(), client); err == nil || !strings.Contains(err.Error(), "greeting") {
		t.Errorf("non-QMP peer: %v", err)
	}
	server.Close()

	// A silent peer: the context bounds the handshake.
	client, server = net.Pipe()
	defer server.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := NewMonitor(ctx, client); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("silent peer: %v", err)
	}
}

// TestMonitorOutOfOrder answers two concurrent commands in reverse order.
func TestMonitorOutOfOrder(t *testing.T) {
	m, f := newFake(t)
	go func() {
		a, _ := f.recv()
		b, _ := f.recv()
		f.send(`{"return": {"name": %q}, "id": %s}`, b.Execute, b.ID)
		f.send(`{"return": {"name": %q}, "id": %s}`, a.Execute, a.ID)
	}()
	var wg sync.WaitGroup
	for _, cmd := range []string{"first", "second"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out struct{ Name string }
			if err := m.Execute(context.Background(), cmd, map[string]int{"x": 1}, &out); err != nil || out.Name != cmd {
				t.Errorf("%s: got %+v, %v", cmd, out, err)
			}
		}()
	}
	wg.Wait()
}

func TestMonitorErrorAndArgs(t *testing.T) {
	m, f := newFake(t)
	go func() {
		r, _ := f.recv()
		if string(r.Arguments) != `{"device":"d0"}` {
			t.Errorf("arguments %s", r.Arguments)
		}
		f.send(`{"error": {"class": "DeviceNotFound", "desc": "Device 'd0' not found"}, "id": %s}`, r.ID)
	}()
	err := m.Execute(context.Background(), "eject", map[string]string{"device": "d0"}, nil)
	var qerr *Error
	if !errors.As(err, &qerr) || qerr.Class != "DeviceNotFound" || qerr.Command != "eject" {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "Device 'd0' not found") {
		t.Errorf("message %q", err)
	}
}

// TestMonitorCancel abandons a command; its late reply must not confuse
// the next one.
func TestMonitorCancel(t *testing.T) {
	m, f := newFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan fakeReq)
	go func() {
		r, _ := f.recv()
		got <- r
	}()
	errc := make(chan error, 1)
	go func() { errc <- m.Execute(ctx, "slow", nil, nil) }()
	slow := <-got
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled command: %v", err)
	}
	go func() {
		r, _ := f.recv()
		f.send(`{"return": {"v": "late"}, "id": %s}`, slow.ID)
		f.send(`{"return": {"v": "fast"}, "id": %s}`, r.ID)
	}()
	var out struct{ V string }
	if err := m.Execute(context.Background(), "fast", nil, &out); err != nil || out.V != "fast" {
		t.Errorf("next command got %+v, %v", out, err)
	}
}

// TestMonitorEvents checks that a subscriber that does not read never
// stalls commands, and that subscriptions close with the connection.
func TestMonitorEvents(t *testing.T) {
	m, f := newFake(t)
	lazy, _ := m.Subscribe()
	active, stop := m.Subscribe()
	stop()
	if _, ok := <-active; ok {
		t.Error("cancelled subscription still open")
	}
	go func() {
		for i := range 3 * eventBuffer {
			f.send(`{"event": "TICK", "data": {"n": %d}, "timestamp": {"seconds": 1700000000, "microseconds": 5}}`, i)
		}
		r, _ := f.recv()
		f.send(`{"return": {}, "id": %s}`, r.ID)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Execute(ctx, "after-events", nil, nil); err != nil {
		t.Fatalf("command behind unread events: %v", err)
	}
	first := <-lazy
	if first.Event != "TICK" || first.Data["n"] != float64(0) || first.Time.Unix() != 1700000000 {
		t.Errorf("first event %+v", first)
	}
	if n := len(lazy); n != eventBuffer-1 {
		t.Errorf("buffered %d events, want %d", n, eventBuffer-1)
	}

	// The peer goes away: commands fail, subscriptions close.
	f.conn.Close()
	<-m.Done()
	if err := m.Execute(context.Background(), "x", nil, nil); !errors.Is(err, ErrMonitorClosed) {
		t.Errorf("after close: %v", err)
	}
	for range lazy {
	}
	late, _ := m.Subscribe()
	if _, ok := <-late; ok {
		t.Error("subscription on a closed monitor is open")
	}
}

// TestMonitorPeerDiesMidCommand fails a pending command when QEMU exits.
func TestMonitorPeerDiesMidCommand(t *testing.T) {
	m, f := newFake(t)
	go func() {
		f.recv()
		f.conn.Close()
	}()
	if err := m.Execute(context.Background(), "quit", nil, nil); !errors.Is(err, ErrMonitorClosed) {
		t.Errorf("got %v", err)
	}
}
