package secrets

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseK8sRef(t *testing.T) {
	good := map[string]K8sRef{
		"default/api-token#token":         {"default", "api-token", "token"},
		"team-a/db.creds#pass_word.v2":    {"team-a", "db.creds", "pass_word.v2"},
		"a/b#" + strings.Repeat("k", 253): {"a", "b", strings.Repeat("k", 253)},
	}
	for in, want := range good {
		got, err := ParseK8sRef(in)
		if err != nil || got != want {
			t.Errorf("ParseK8sRef(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if c, err := Check(Ref{Scheme: "k8s", Ref: in}); err != nil || c.Ref != in {
			t.Errorf("Check(k8s:%s) = %v, %v", in, c, err)
		}
	}
	for _, in := range []string{
		"", "nsonly", "nsonly/tok", "default#k", "/tok#k", "Default/tok#k", "-ns/tok#k", "ns-/tok#k",
		strings.Repeat("n", 64) + "/tok#k", "ns/Tok#k", "ns/to..k#k", "ns/tok#", "ns/tok#.", "ns/tok#..",
		"ns/tok#a/b", "ns/tok#a b", "ns/a/b#k", "ns/tok#" + strings.Repeat("k", 254),
	} {
		if _, err := ParseK8sRef(in); !errors.Is(err, ErrBadRef) {
			t.Errorf("ParseK8sRef(%q) = %v, want ErrBadRef", in, err)
		} else if in != "" && strings.Contains(err.Error(), in) {
			t.Errorf("ParseK8sRef(%q) quotes the reference: %v", in, err)
		}
	}
}

// k8sServer answers each request on a real unix socket with answer.
func k8sServer(t *testing.T, answer func(c net.Conn)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "k8s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); answer(c) }()
		}
	}()
	return sock
}

func TestK8sResolver(t *testing.T) {
	const value = "s3cr3t-value"
	var asked []string
	reqs := make(chan string, 10)
	sock := k8sServer(t, func(c net.Conn) {
		r, err := ReadK8sRequest(c)
		if err != nil {
			WriteK8sError(c, err)
			return
		}
		reqs <- r.String()
		switch r.Key {
		case "ok":
			WriteK8sValue(c, []byte(value))
		case "missing":
			WriteK8sError(c, Errorf(ErrNoField, "Secret ns/tok has no key missing"))
		case "denied":
			WriteK8sError(c, Errorf(ErrDenied, "no pod on this node declared it"))
		case "huge":
			var hdr [5]byte
			binary.BigEndian.PutUint32(hdr[1:], MaxValueSize+1)
			c.Write(hdr[:])
		case "short":
			c.Write([]byte{0, 0, 0, 0, 9, 'a'})
		}
	})
	env := func(k string) (string, bool) {
		if k == K8sSocketEnv {
			return sock, true
		}
		return "", false
	}
	ctx := context.Background()
	v, err := Resolve(ctx, Ref{Scheme: "k8s", Ref: "ns/tok#ok"}, env)
	if err != nil || string(v.Bytes()) != value {
		t.Fatalf("resolve = %v, %v", v, err)
	}
	v.Zero()
	asked = append(asked, <-reqs)
	if asked[0] != "ns/tok#ok" {
		t.Errorf("the node was asked %q", asked[0])
	}
	for key, kind := range map[string]error{"missing": ErrNoField, "denied": ErrDenied, "huge": ErrUnavailable, "short": ErrUnavailable} {
		_, err := Resolve(ctx, Ref{Scheme: "k8s", Ref: "ns/tok#" + key}, env)
		if !errors.Is(err, kind) || !strings.Contains(err.Error(), "k8s:ns/tok#"+key) || strings.Contains(err.Error(), value) {
			t.Errorf("%s: %v, want %v naming the reference", key, err, kind)
		}
	}
	// Fail closed without the node.
	if _, err := Resolve(ctx, Ref{Scheme: "k8s", Ref: "ns/tok#ok"}, func(string) (string, bool) { return "", false }); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), K8sSocketEnv) {
		t.Errorf("no socket variable: %v, want ErrConfig naming %s", err, K8sSocketEnv)
	}
	gone := filepath.Join(t.TempDir(), "gone.sock")
	if _, err := Resolve(ctx, Ref{Scheme: "k8s", Ref: "ns/tok#ok"}, func(string) (string, bool) { return gone, true }); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "node") {
		t.Errorf("node gone: %v, want ErrUnavailable", err)
	}
}

func TestReadK8sRequestHostile(t *testing.T) {
	frame := func(n int, body string) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(n))
		return append(b, body...)
	}
	for name, in := range map[string][]byte{
		"empty":     nil,
		"half":      {0},
		"zero":      frame(0, ""),
		"oversized": frame(65535, strings.Repeat("a", 100)),
		"too long":  frame(maxK8sRequest+1, strings.Repeat("a", maxK8sRequest+1)),
		"cut":       frame(20, "ns/tok#k"),
		"bad ref":   frame(len("../etc#k"), "../etc#k"),
		"control":   frame(len("ns/tok#k\n"), "ns/tok#k\n"),
	} {
		if _, err := ReadK8sRequest(bytes.NewReader(in)); !errors.Is(err, ErrBadRef) {
			t.Errorf("%s: %v, want ErrBadRef", name, err)
		}
	}
	r, err := ReadK8sRequest(bytes.NewReader(frame(len("ns/tok#k"), "ns/tok#k")))
	if err != nil || r != (K8sRef{"ns", "tok", "k"}) {
		t.Errorf("a good request: %+v, %v", r, err)
	}
}

func TestDeclDeliveryShape(t *testing.T) {
	ref := Ref{Scheme: "k8s", Ref: "ns/tok#k"}
	var d Declarations
	for name, decl := range map[string]Decl{
		"env on demand":  {Name: "A", Ref: ref, Env: true, OnDemand: true},
		"path on demand": {Name: "B", Ref: ref, Mount: "/etc/x", Path: "p", OnDemand: true},
		"env egress":     {Name: "C", Ref: ref, Env: true, EgressHosts: []string{"api.example.com"}},
		"mount, no path": {Name: "D", Ref: ref, Mount: "/etc/x"},
		"path, no mount": {Name: "E", Ref: ref, Path: "p"},
	} {
		if err := d.Add(decl); !errors.Is(err, ErrBadRef) {
			t.Errorf("%s: %v, want ErrBadRef", name, err)
		}
	}
	if err := d.Add(Decl{Name: "F", Ref: ref, Env: true, Mount: "/etc/x", Path: "p"}); err != nil {
		t.Errorf("a materialized secret as a variable and at a path: %v", err)
	}
}
