package usernet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/usernet/intercept"
)

// The secret swap's values travel on a socket pair of their own between
// the helper (which asks) and the process that started it (which resolves
// them: the supervisor). One JSON line per request and per reply, matched
// by ID, so requests are answered concurrently. Hand-written because it
// is a dozen lines over a socket pair that only two processes of ours
// share; a reply's value is base64 in the line (encoding/json's []byte),
// and every buffer that held it is zeroed.

// Bounds of the value protocol.
const (
	// maxValueLine bounds one line: a request's path is cut by the
	// interceptor, a value by intercept's limit (16 KiB, 4/3 in base64).
	maxValueLine = 64 << 10
	// maxValueRequests bounds the requests the host resolves at once; one
	// more waits for a slot (the interceptor bounds its own in flight).
	maxValueRequests = 64
	// maxRequestField bounds a request's host, method and path.
	maxRequestField = 2048
)

type valueRequest struct {
	ID     uint64 `json:"id"`
	Name   string `json:"name"`
	Host   string `json:"host"`
	Method string `json:"method"`
	Path   string `json:"path"`
}

type valueReply struct {
	ID    uint64 `json:"id"`
	Value []byte `json:"value,omitempty"`
	Kind  string `json:"kind,omitempty"`
}

// serveValues answers the helper's value requests on c with src until c
// closes. The helper faces the guest, so its requests are checked again
// here: only a rule's name, only toward one of its hosts.
func serveValues(c net.Conn, src vmm.SwapSource, rules []vmm.SwapRule) {
	defer c.Close()
	in := bufio.NewScanner(c)
	in.Buffer(make([]byte, 0, 4<<10), maxValueLine)
	var wmu sync.Mutex
	reply := func(r valueReply) {
		b, _ := json.Marshal(r)
		clear(r.Value)
		wmu.Lock()
		c.Write(append(b, '\n'))
		wmu.Unlock()
		clear(b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slots := make(chan struct{}, maxValueRequests)
	var wg sync.WaitGroup
	defer wg.Wait()
	for in.Scan() {
		var req valueRequest
		if json.Unmarshal(in.Bytes(), &req) != nil {
			return // not the helper we started: stop answering
		}
		if why := checkValueRequest(req, rules); why != "" {
			reply(valueReply{ID: req.ID, Kind: why})
			continue
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			v, err := src.Value(ctx, vmm.SwapRequest{Name: req.Name, Host: req.Host, Method: req.Method, Path: req.Path})
			if err != nil {
				clear(v)
				kind := "failed"
				var se *vmm.SwapError
				if errors.As(err, &se) {
					kind = se.Kind
				}
				reply(valueReply{ID: req.ID, Kind: kind})
				return
			}
			if len(v) > intercept.MaxValue {
				// It could not go into a header, and a line this long would
				// end the helper's side of the socket.
				clear(v)
				reply(valueReply{ID: req.ID, Kind: fmt.Sprintf("value larger than %d bytes", intercept.MaxValue)})
				return
			}
			reply(valueReply{ID: req.ID, Value: v})
		}()
	}
}

// checkValueRequest says why req is refused ("" when it is not).
func checkValueRequest(req valueRequest, rules []vmm.SwapRule) string {
	if len(req.Host) > maxRequestField || len(req.Method) > maxRequestField || len(req.Path) > maxRequestField {
		return "request too long"
	}
	for _, r := range rules {
		if r.Name != req.Name {
			continue
		}
		if vmm.MatchName(r.Hosts, req.Host) {
			return ""
		}
		return "not for this host"
	}
	return "not declared"
}

// ValueClient is the helper's side of the value protocol: a
// vmm.SwapSource that asks the process that started the helper.
type ValueClient struct {
	c  net.Conn
	mu sync.Mutex
	// pending are the requests waiting for a reply; nil once the
	// connection is gone (every later request fails at once).
	pending map[uint64]chan valueReply
	next    uint64
	wmu     sync.Mutex
}

// NewValueClient asks for values over c (the helper's descriptor).
func NewValueClient(c net.Conn) *ValueClient {
	v := &ValueClient{c: c, pending: map[uint64]chan valueReply{}}
	go v.read()
	return v
}

func (v *ValueClient) read() {
	in := bufio.NewScanner(v.c)
	in.Buffer(make([]byte, 0, 4<<10), maxValueLine)
	for in.Scan() {
		var r valueReply
		err := json.Unmarshal(in.Bytes(), &r)
		clear(in.Bytes())
		if err != nil {
			break
		}
		v.mu.Lock()
		ch := v.pending[r.ID]
		delete(v.pending, r.ID)
		v.mu.Unlock()
		if ch == nil {
			clear(r.Value)
			continue
		}
		ch <- r
	}
	// The host is gone: fail closed, now and for every later request.
	v.mu.Lock()
	for id, ch := range v.pending {
		ch <- valueReply{ID: id, Kind: "unavailable"}
	}
	v.pending = nil
	v.mu.Unlock()
}

// Value implements vmm.SwapSource.
func (v *ValueClient) Value(ctx context.Context, r vmm.SwapRequest) ([]byte, error) {
	ch := make(chan valueReply, 1)
	v.mu.Lock()
	if v.pending == nil {
		v.mu.Unlock()
		return nil, &vmm.SwapError{Kind: "unavailable"}
	}
	v.next++
	id := v.next
	v.pending[id] = ch
	v.mu.Unlock()
	b, _ := json.Marshal(valueRequest{ID: id, Name: r.Name, Host: r.Host, Method: r.Method, Path: r.Path})
	v.wmu.Lock()
	_, err := v.c.Write(append(b, '\n'))
	v.wmu.Unlock()
	if err != nil {
		v.forget(id)
		return nil, &vmm.SwapError{Kind: "unavailable"}
	}
	select {
	case rep := <-ch:
		if rep.Kind != "" || len(rep.Value) == 0 {
			clear(rep.Value)
			kind := rep.Kind
			if kind == "" {
				kind = "empty value"
			}
			return nil, &vmm.SwapError{Kind: kind}
		}
		return rep.Value, nil
	case <-ctx.Done():
		v.forget(id)
		return nil, ctx.Err()
	}
}

func (v *ValueClient) forget(id uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pending != nil {
		delete(v.pending, id)
	}
}
