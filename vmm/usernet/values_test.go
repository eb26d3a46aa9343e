package usernet

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/microagent-dev/microagent/vmm"
)

type mapSource map[string]string

func (m mapSource) Value(_ context.Context, r vmm.SwapRequest) ([]byte, error) {
	if v, ok := m[r.Name+" "+r.Method+" "+r.Path]; ok {
		return []byte(v), nil
	}
	return nil, &vmm.SwapError{Kind: "not found"}
}

// TestValueProtocol: the helper's client gets values the host resolves,
// only for a rule's name toward one of its hosts; the host's failure kind
// passes, and once the host side is gone every request fails closed.
func TestValueProtocol(t *testing.T) {
	helperEnd, hostEnd := net.Pipe()
	rules := []vmm.SwapRule{{Name: "K", Placeholder: "p", Hosts: []string{"api.test", ".example.test"}}}
	done := make(chan struct{})
	go func() { serveValues(hostEnd, mapSource{"K GET /v1": "the-value"}, rules); close(done) }()
	c := NewValueClient(helperEnd)
	ctx := context.Background()
	for _, tc := range []struct {
		req        vmm.SwapRequest
		want, kind string
	}{
		{vmm.SwapRequest{Name: "K", Host: "api.test", Method: "GET", Path: "/v1"}, "the-value", ""},
		{vmm.SwapRequest{Name: "K", Host: "a.example.test", Method: "GET", Path: "/v1"}, "the-value", ""},
		{vmm.SwapRequest{Name: "K", Host: "api.test", Method: "POST", Path: "/v1"}, "", "not found"},
		{vmm.SwapRequest{Name: "K", Host: "evil.test", Method: "GET", Path: "/v1"}, "", "not for this host"},
		{vmm.SwapRequest{Name: "OTHER", Host: "api.test", Method: "GET", Path: "/v1"}, "", "not declared"},
	} {
		v, err := c.Value(ctx, tc.req)
		var se *vmm.SwapError
		switch {
		case tc.kind == "" && (err != nil || string(v) != tc.want):
			t.Errorf("%+v: %q, %v", tc.req, v, err)
		case tc.kind != "" && (!errors.As(err, &se) || se.Kind != tc.kind || v != nil):
			t.Errorf("%+v: %q, %v; want kind %q", tc.req, v, err, tc.kind)
		}
	}
	hostEnd.Close()
	<-done
	var se *vmm.SwapError
	if _, err := c.Value(ctx, vmm.SwapRequest{Name: "K", Host: "api.test", Method: "GET", Path: "/v1"}); !errors.As(err, &se) || se.Kind != "unavailable" {
		t.Fatalf("after the host side closed: %v", err)
	}
}

// TestValueProtocolHostile: a line that is not a request (the helper is
// the guest's first target) ends the host's answers instead of being
// guessed at.
func TestValueProtocolHostile(t *testing.T) {
	helperEnd, hostEnd := net.Pipe()
	done := make(chan struct{})
	go func() { serveValues(hostEnd, mapSource{}, nil); close(done) }()
	go helperEnd.Write([]byte("{not json\n"))
	<-done
	if _, err := helperEnd.Write([]byte("x")); err == nil {
		t.Fatal("the host side still reads after a malformed line")
	}
}
