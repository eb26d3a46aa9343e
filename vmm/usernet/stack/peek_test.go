package stack

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
)

// clientHello is the first flight of a real TLS client for serverName.
func clientHello(t *testing.T, serverName string) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: serverName == ""}).Handshake()
		c.Close()
	}()
	buf := make([]byte, maxPeek)
	held := 0
	for {
		k, err := s.Read(buf[held:])
		held += k
		if _, nerr := nameIn(buf[:held]); !errors.Is(nerr, errNeedMore) || err != nil {
			return buf[:held]
		}
	}
}

func TestNameIn(t *testing.T) {
	hello := clientHello(t, "evil.test")
	if name, err := nameIn(hello); err != nil || name != "evil.test" {
		t.Errorf("ClientHello: %q, %v", name, err)
	}
	for i := 1; i < len(hello); i += 97 {
		if _, err := nameIn(hello[:i]); !errors.Is(err, errNeedMore) {
			t.Fatalf("first %d bytes of a ClientHello: %v", i, err)
		}
	}
	if name, err := nameIn(clientHello(t, "")); !errors.Is(err, errNoName) || name != "" {
		t.Errorf("ClientHello without a server name: %q, %v", name, err)
	}
	for req, want := range map[string]string{
		"GET / HTTP/1.1\r\nHost: evil.test:8080\r\nAccept: */*\r\n\r\n": "evil.test",
		"POST /x HTTP/1.1\r\nhOsT:  a.example\r\n\r\nbody":              "a.example",
		"GET / HTTP/1.0\r\n\r\n":                                        "",
	} {
		if name, err := nameIn([]byte(req)); name != want || (err != nil && !errors.Is(err, errNoName)) {
			t.Errorf("%q: %q, %v", req, name, err)
		}
	}
	for _, part := range []string{"GE", "GET / HTTP/1.1\r\nHost: x"} {
		if _, err := nameIn([]byte(part)); !errors.Is(err, errNeedMore) {
			t.Errorf("%q: %v", part, err)
		}
	}
	if _, err := nameIn([]byte("SSH-2.0-OpenSSH\r\n")); !errors.Is(err, errNoName) {
		t.Errorf("SSH: %v", err)
	}
	bad := append([]byte{0x16, 3, 1, 0, 8, 2}, make([]byte, 7)...) // a ServerHello
	if _, err := nameIn(bad); err == nil || errors.Is(err, errNeedMore) || errors.Is(err, errNoName) {
		t.Errorf("not a ClientHello: %v", err)
	}
}
