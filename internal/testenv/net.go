package testenv

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// HostAddr returns a non-loopback IPv4 address of this host: a place a
// guest on the user network reaches as "the outside world" without any
// traffic leaving the machine. A host without one skips the test, or fails
// it under CI.
func HostAddr(t testing.TB) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
			return p.Addr()
		}
	}
	SkipOrFail(t, "this host has no non-loopback IPv4 address")
	return netip.Addr{}
}

// MustFreePort is FreePort for a test: failing to find a port fails it.
func MustFreePort(t testing.TB) int {
	t.Helper()
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Fetch polls url until it answers 200 with want, bounded: the NAT accepts
// host connections before the guest's server listens (and then resets
// them). It returns the time to the answer.
func Fetch(t testing.TB, url, want string) time.Duration {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	var last string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK && string(b) == want {
			return time.Since(start)
		}
		last = fmt.Sprintf("%s %q %v", resp.Status, b, err)
	}
	t.Fatalf("GET %s: never got %q (last: %s)", url, want, last)
	return 0
}

// ServeUnix listens on a UNIX socket at path (its folder made 0700 if
// missing) and calls serve for each connection, closing it afterwards,
// until the test ends: a stand-in peer on a socket a test cannot get a real
// one of.
func ServeUnix(t testing.TB, path string, serve func(net.Conn)) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
			c.Close()
		}
	}()
}
