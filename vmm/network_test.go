package vmm

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseForward(t *testing.T) {
	for spec, want := range map[string]Forward{
		"8080:80":               {HostIP: DefaultPublishIP, HostPort: 8080, GuestPort: 80},
		"8080:80/tcp":           {HostIP: DefaultPublishIP, HostPort: 8080, GuestPort: 80},
		"0.0.0.0:1:65535":       {HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 1, GuestPort: 65535},
		"127.0.0.2:18080:8080":  {HostIP: netip.MustParseAddr("127.0.0.2"), HostPort: 18080, GuestPort: 8080},
		"10.1.2.3:443:8443/tcp": {HostIP: netip.MustParseAddr("10.1.2.3"), HostPort: 443, GuestPort: 8443},
	} {
		got, err := ParseForward(spec)
		if err != nil || got != want {
			t.Errorf("%q: got %+v, %v; want %+v", spec, got, err, want)
		}
	}
	for spec, why := range map[string]string{
		"":                 "need a host port",
		"8080":             "need a host port",
		"a:80":             `host port: "a" is not a number`,
		"80:b":             `guest port: "b" is not a number`,
		"0:80":             "out of range",
		"80:65536":         "out of range",
		"-1:80":            "not a number",
		"+1:80":            "not a number",
		"8080:80/udp":      "only tcp",
		"8080:80/sctp":     "unknown protocol",
		"localhost:80:80":  "not an IPv4 address",
		"[::1]:80:80":      "need a host port",
		"::1:80:80":        "need a host port",
		"1.2.3.4:5:6:7":    "need a host port",
		"127.0.0.1::80":    `host port: "" is not a number`,
		"127.0.0.1:80:":    `guest port: "" is not a number`,
		"8080:80/tcp/tcp":  "unknown protocol",
		"99999999999:80":   "out of range",
		"127.0.0.1:80:8 0": "not a number",
	} {
		_, err := ParseForward(spec)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), `"`+spec+`"`) {
			t.Errorf("%q: got %v; want an error naming the spec and %q", spec, err, why)
		}
	}
}

func TestNetworkValidate(t *testing.T) {
	fw := func(port int) Forward { return Forward{HostIP: DefaultPublishIP, HostPort: port, GuestPort: 80} }
	for name, n := range map[string]*Network{
		"nil":          nil,
		"default":      {},
		"user forward": {Mode: NetworkUser, Forwards: []Forward{fw(1), fw(2)}, HostAccess: true},
		"isolated":     {Mode: NetworkIsolated},
		"dns":          {HostAccess: true, DNS: []netip.Addr{UserAddressing.Gateway, netip.MustParseAddr("192.0.2.53")}},
		"host ports":   {HostAccess: true, HostPorts: []int{53, 11434}, DNS: []netip.Addr{UserAddressing.Gateway}},
		"allow cidrs":  {AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd00::/8")}},
	} {
		if err := n.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, n := range map[string]*Network{
		"isolated publish":      {Mode: NetworkIsolated, Forwards: []Forward{fw(1)}},
		"isolated host access":  {Mode: NetworkIsolated, HostAccess: true},
		"unknown mode":          {Mode: "bridge"},
		"twice":                 {Forwards: []Forward{fw(1), fw(1)}},
		"zero forward":          {Forwards: []Forward{{}}},
		"isolated dns":          {Mode: NetworkIsolated, DNS: []netip.Addr{UserAddressing.Gateway}},
		"gateway dns no access": {DNS: []netip.Addr{UserAddressing.Gateway}},
		"ipv6 dns":              {HostAccess: true, DNS: []netip.Addr{netip.MustParseAddr("::1")}},
		"unspecified dns":       {HostAccess: true, DNS: []netip.Addr{netip.MustParseAddr("0.0.0.0")}},
		"zero dns":              {HostAccess: true, DNS: []netip.Addr{{}}},
		"ports without access":  {HostPorts: []int{8080}},
		"port out of range":     {HostAccess: true, HostPorts: []int{65536}},
		"gateway dns, not 53":   {HostAccess: true, HostPorts: []int{8080}, DNS: []netip.Addr{UserAddressing.Gateway}},
		"isolated cidr":         {Mode: NetworkIsolated, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		"loopback cidr":         {AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		"everything cidr":       {AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
		"ipv6 loopback cidr":    {AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("::/0")}},
		"unmasked cidr":         {AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}},
		"zero cidr":             {AllowCIDRs: []netip.Prefix{{}}},
	} {
		if err := n.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if !(*Network)(nil).Isolated() || (&Network{}).Isolated() {
		t.Error("Isolated: nil must be isolated, the zero mode must not")
	}
}

// TestCheckUserNetwork: a DNS server needs an open outbound path, which a
// user network without Outbound (slirp) opens only with host access.
func TestCheckUserNetwork(t *testing.T) {
	dns := []netip.Addr{netip.MustParseAddr("192.0.2.53")}
	slirp := UserNetwork{Provider: "slirp"}
	passt := UserNetwork{Provider: "passt", Outbound: true}
	if err := (&Network{DNS: dns}).Validate(); err != nil {
		t.Errorf("a non-gateway DNS server without host access is for the backend to judge: %v", err)
	}
	if err := (&Network{DNS: dns}).CheckUserNetwork(slirp); err == nil || !strings.Contains(err.Error(), "add --host-access") {
		t.Errorf("slirp without host access: %v", err)
	}
	if err := (&Network{DNS: dns}).CheckUserNetwork(UserNetwork{}); err == nil {
		t.Error("unknown backend without host access: no error")
	}
	for _, c := range []struct {
		n *Network
		u UserNetwork
	}{
		{&Network{DNS: dns, HostAccess: true}, slirp},
		{&Network{DNS: dns}, passt},
		{&Network{}, slirp},
		{nil, slirp},
	} {
		if err := c.n.CheckUserNetwork(c.u); err != nil {
			t.Errorf("%+v on %+v: %v", c.n, c.u, err)
		}
	}
	if (UserNetwork{Outbound: true}).Open(nil) || !(UserNetwork{}).Open(&Network{HostAccess: true}) || (UserNetwork{}).Open(&Network{}) {
		t.Error("Open: wrong answer")
	}
}

func TestParseAllowName(t *testing.T) {
	for in, want := range map[string]string{"PyPI.org.": "pypi.org", ".github.com": ".github.com", "a_b.example": "a_b.example", "localhost": "localhost"} {
		if got, err := ParseAllowName(in); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ".", "*.github.com", "github.*", "10.0.0.1", "::1", "a..b", "..github.com", "exa mple.com", strings.Repeat("a", 64) + ".com"} {
		if _, err := ParseAllowName(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	if err := (&Network{AllowNames: []string{"pypi.org"}, DNS: []netip.Addr{netip.MustParseAddr("1.1.1.1")}}).Validate(); err == nil {
		t.Error("an allowlist with a resolver of the guest's choosing: no error")
	}
}
