package usernet

import (
	"net/netip"
	"testing"
)

func TestDecide(t *testing.T) {
	host := []netip.Addr{netip.MustParseAddr("203.0.113.9")}
	loop := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port) }
	open := Policy{HostAccess: true}
	ports := Policy{HostAccess: true, HostPorts: []int{8080}}
	cidr := Policy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("203.0.113.0/24")}}
	cases := []struct {
		p     Policy
		dst   string
		allow bool
		dial  netip.AddrPort // checked when allowed
	}{
		{Policy{}, "8.8.8.8:443", true, netip.MustParseAddrPort("8.8.8.8:443")},
		{Policy{}, "[2001:db8::1]:443", true, netip.MustParseAddrPort("[2001:db8::1]:443")},
		{Policy{}, "10.0.2.3:53", true, netip.AddrPort{}},
		{Policy{}, "10.0.2.3:80", false, netip.AddrPort{}},
		{Policy{}, "10.0.2.2:80", false, netip.AddrPort{}},
		{Policy{}, "10.0.2.9:80", false, netip.AddrPort{}},
		{open, "10.0.2.2:80", true, loop(80)},
		{open, "10.0.2.9:80", false, netip.AddrPort{}},
		{ports, "10.0.2.2:8080", true, loop(8080)},
		{ports, "10.0.2.2:8081", false, netip.AddrPort{}},
		// The route_localnet attack: the guest sends 127/8 to the gateway.
		{Policy{}, "127.0.0.1:80", false, netip.AddrPort{}},
		{open, "127.0.0.1:80", false, netip.AddrPort{}},
		{open, "127.1.2.3:80", false, netip.AddrPort{}},
		{Policy{}, "[::1]:80", false, netip.AddrPort{}},
		{Policy{}, "[::ffff:127.0.0.1]:80", false, netip.AddrPort{}},
		{Policy{}, "[::ffff:10.1.1.1]:80", false, netip.AddrPort{}},
		{Policy{}, "10.1.2.3:80", false, netip.AddrPort{}},
		{Policy{}, "172.16.0.1:80", false, netip.AddrPort{}},
		{Policy{}, "172.31.255.255:80", false, netip.AddrPort{}},
		{Policy{}, "172.32.0.1:80", true, netip.MustParseAddrPort("172.32.0.1:80")},
		{Policy{}, "192.168.1.1:80", false, netip.AddrPort{}},
		{Policy{}, "100.64.0.1:80", false, netip.AddrPort{}},
		{Policy{}, "169.254.169.254:80", false, netip.AddrPort{}},
		{Policy{}, "0.0.0.0:80", false, netip.AddrPort{}},
		{Policy{}, "0.1.2.3:80", false, netip.AddrPort{}},
		{Policy{}, "224.0.0.1:5353", false, netip.AddrPort{}},
		{Policy{}, "255.255.255.255:67", false, netip.AddrPort{}},
		{Policy{}, "[fc00::1]:80", false, netip.AddrPort{}},
		{Policy{}, "[fd12::1]:80", false, netip.AddrPort{}},
		{Policy{}, "[fe80::1]:80", false, netip.AddrPort{}},
		{Policy{}, "[ff02::1]:80", false, netip.AddrPort{}},
		{Policy{}, "203.0.113.9:22", false, netip.AddrPort{}}, // the host's own address
		{open, "203.0.113.9:22", false, netip.AddrPort{}},
		{cidr, "192.168.1.7:80", true, netip.MustParseAddrPort("192.168.1.7:80")},
		{cidr, "192.168.2.7:80", false, netip.AddrPort{}},
		{cidr, "203.0.113.9:22", true, netip.MustParseAddrPort("203.0.113.9:22")},
		{Policy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, "127.0.0.1:80", false, netip.AddrPort{}},
		{Policy{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, "10.0.2.2:80", false, netip.AddrPort{}},
	}
	for _, c := range cases {
		d := c.p.Decide(netip.MustParseAddrPort(c.dst), host, nil)
		if d.Allowed() != c.allow || d.Reason == "" || (c.allow && d.Dial != c.dial) || (!c.allow && d.Dial.IsValid()) {
			t.Errorf("%+v to %s: %+v, want allow %v dial %v", c.p, c.dst, d, c.allow, c.dial)
		}
	}
	if d := (&Policy{}).Decide(netip.MustParseAddrPort("10.0.2.3:53"), nil, nil); !d.Resolver {
		t.Errorf("the DNS forwarder: %+v", d)
	}
}

// TestDecideAllowlist: with names allowed, only the stand-in addresses the
// resolver handed out lead anywhere, and the real address behind them
// passes the same policy as a literal would.
func TestDecideAllowlist(t *testing.T) {
	p := Policy{AllowNames: []string{"pypi.org", ".example.com"}, HostAccess: true, HostPorts: []int{8080}}
	for name, want := range map[string]bool{
		"pypi.org": true, "PyPI.org.": true, "files.pypi.org": false, "example.com": true, "a.b.example.com": true,
		"badexample.com": false, "org": false, "": false,
	} {
		if p.AllowsName(name) != want {
			t.Errorf("AllowsName(%q) = %v", name, !want)
		}
	}
	table := map[netip.Addr]Resolved{
		netip.MustParseAddr("198.18.0.1"): {Name: "pypi.org", Real: netip.MustParseAddr("151.101.0.223")},
		netip.MustParseAddr("198.18.0.2"): {Name: "a.example.com", Real: netip.MustParseAddr("127.0.0.1")},
		netip.MustParseAddr("198.18.0.3"): {Name: "rebind.example.com", Real: netip.MustParseAddr("192.168.1.1")},
		netip.MustParseAddr("198.18.0.4"): {Name: "gw.example.com", Real: netip.MustParseAddr("10.0.2.2")},
	}
	lookup := func(a netip.Addr) (Resolved, bool) { r, ok := table[a]; return r, ok }
	for dst, dial := range map[string]string{
		"198.18.0.1:443":     "151.101.0.223:443",
		"198.18.0.2:8080":    "127.0.0.1:8080",
		"198.18.0.2:8081":    "",
		"198.18.0.3:80":      "",
		"198.18.0.4:80":      "",
		"198.18.0.9:443":     "", // never handed out
		"151.101.0.223:443":  "", // the literal
		"10.0.2.3:53":        "",
		"203.0.113.53:53":    "", // a resolver of the guest's choosing
		"10.0.2.2:8080":      "127.0.0.1:8080",
		"169.254.169.254:80": "",
	} {
		d := p.Decide(netip.MustParseAddrPort(dst), nil, lookup)
		switch {
		case dst == "10.0.2.3:53":
			if !d.Resolver {
				t.Errorf("%s: %+v", dst, d)
			}
		case dial == "" && d.Allowed(), dial != "" && d.Dial != netip.MustParseAddrPort(dial):
			t.Errorf("%s: %+v, want dial %q", dst, d, dial)
		}
	}
}

// TestDecideEgressNone: nothing public and no name, but what flags open
// explicitly stays open.
func TestDecideEgressNone(t *testing.T) {
	p := Policy{None: true, HostAccess: true, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}
	if p.AllowsName("pypi.org") || !p.Allowlist() {
		t.Error("--egress none allows a name")
	}
	for dst, want := range map[string]bool{"8.8.8.8:443": false, "10.0.2.2:80": true, "192.168.1.5:22": true, "10.0.2.3:53": true} {
		if d := p.Decide(netip.MustParseAddrPort(dst), nil, nil); d.Allowed() != want {
			t.Errorf("%s: %+v", dst, d)
		}
	}
}

// TestDecideRevoked: a stand-in address handed out for a name is refused
// once a policy change revoked the name, and the policy describes itself
// for the egress log.
func TestDecideRevoked(t *testing.T) {
	r := Resolved{Name: "a.test", Real: netip.MustParseAddr("8.8.8.8")}
	resolved := func(netip.Addr) (Resolved, bool) { return r, true }
	dst := netip.MustParseAddrPort("198.18.0.1:443")
	before := Policy{AllowNames: []string{"a.test", "b.test"}}
	if d := before.Decide(dst, nil, resolved); !d.Allowed() || d.Dial != netip.MustParseAddrPort("8.8.8.8:443") {
		t.Fatalf("before: %+v", d)
	}
	for _, after := range []Policy{{AllowNames: []string{"b.test"}}, {None: true}} {
		if d := after.Decide(dst, nil, resolved); d.Allowed() || d.Reason != "a.test: no longer in the allowlist (revoked)" {
			t.Errorf("%s: %+v", after, d)
		}
	}
	for p, want := range map[string]Policy{
		"egress only a.test b.test":                        before,
		"egress none, host ports [53]":                     {None: true, HostAccess: true, HostPorts: []int{53}},
		"public addresses, and [10.1.0.0/16], host access": {HostAccess: true, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
	} {
		if got := want.String(); got != p {
			t.Errorf("String() = %q, want %q", got, p)
		}
	}
}
