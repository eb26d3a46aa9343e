package testenv

import (
	"net"
	"net/netip"
	"testing"
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
	if InCI() {
		t.Fatal("this host has no non-loopback IPv4 address")
	}
	t.Skip("this host has no non-loopback IPv4 address")
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
