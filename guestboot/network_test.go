package guestboot

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/microagent-dev/microagent/vmm"
)

// TestGuestNetworkDNS: the guest's nameservers are the NAT's forwarder when
// the outbound path is open (passt always, slirp with host access), none
// when it is closed, and exactly the given ones with --dns.
func TestGuestNetworkDNS(t *testing.T) {
	gw := vmm.UserAddressing.Gateway
	slirp := vmm.UserNetwork{Provider: "slirp"}
	passt := vmm.UserNetwork{Provider: "passt", Outbound: true}
	for name, c := range map[string]struct {
		n    vmm.Network
		u    vmm.UserNetwork
		want []string
	}{
		"slirp closed":      {vmm.Network{}, slirp, nil},
		"slirp host access": {vmm.Network{HostAccess: true}, slirp, []string{"10.0.2.3"}},
		"passt":             {vmm.Network{}, passt, []string{"10.0.2.3"}},
		"passt host access": {vmm.Network{HostAccess: true}, passt, []string{"10.0.2.3"}},
		"dns":               {vmm.Network{HostAccess: true, DNS: []netip.Addr{gw, netip.MustParseAddr("192.0.2.53")}}, slirp, []string{"10.0.2.2", "192.0.2.53"}},
		"passt dns":         {vmm.Network{DNS: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}, passt, []string{"192.0.2.53"}},
		"isolated":          {vmm.Network{Mode: vmm.NetworkIsolated}, passt, nil},
	} {
		got := GuestNetworkFor(&c.n, "h", c.u)
		if !slices.Equal(got.DNS, c.want) {
			t.Errorf("%s: DNS %v, want %v", name, got.DNS, c.want)
		}
	}
}
