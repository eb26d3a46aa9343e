package runner

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/microagent-dev/microagent/vmm"
)

// TestGuestNetworkDNS: the guest's nameservers are the NAT's forwarder with
// host access, none without, and exactly the given ones with --dns.
func TestGuestNetworkDNS(t *testing.T) {
	gw := vmm.UserAddressing.Gateway
	for name, c := range map[string]struct {
		n    vmm.Network
		want []string
	}{
		"closed":      {vmm.Network{}, nil},
		"host access": {vmm.Network{HostAccess: true}, []string{"10.0.2.3"}},
		"dns":         {vmm.Network{HostAccess: true, DNS: []netip.Addr{gw, netip.MustParseAddr("192.0.2.53")}}, []string{"10.0.2.2", "192.0.2.53"}},
		"isolated":    {vmm.Network{Mode: vmm.NetworkIsolated}, nil},
	} {
		got := GuestNetwork(&c.n, "h")
		if !slices.Equal(got.DNS, c.want) {
			t.Errorf("%s: DNS %v, want %v", name, got.DNS, c.want)
		}
	}
}
