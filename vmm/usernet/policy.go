package usernet

import (
	"net/netip"
	"slices"

	"github.com/microagent-dev/microagent/vmm"
)

// Verdicts of a Decision.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Decision is the policy's answer for one guest flow.
type Decision struct {
	// Verdict is Allow or Deny.
	Verdict string
	// Reason says why, in words a user can act on.
	Reason string
	// Dial is the host-side destination of an allowed flow: the guest's
	// destination, or the host's loopback for the gateway with host access.
	// Invalid for the network's own DNS forwarder (the helper answers).
	Dial netip.AddrPort
	// Resolver is true for the network's own DNS forwarder
	// (UserAddressing.DNS port 53), which the helper serves itself.
	Resolver bool
}

// Allowed reports whether d lets the flow through.
func (d Decision) Allowed() bool { return d.Verdict == Allow }

// closedRanges are refused unless a Policy.AllowCIDRs entry opens them:
// everything that is not public unicast. The host's loopback is in the
// list but is never opened by a CIDR (only by host access, at the gateway).
var closedRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" (0/8)"},
	{netip.MustParsePrefix("10.0.0.0/8"), "a private range (10/8)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "the shared address space (100.64/10)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "the host's loopback (127/8)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local and cloud metadata (169.254/16)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "a private range (172.16/12)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "a private range (192.168/16)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast (224/4)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved and broadcast (240/4)"},
	{netip.MustParsePrefix("::/128"), "the unspecified address (::)"},
	{netip.MustParsePrefix("::1/128"), "the host's loopback (::1)"},
	{netip.MustParsePrefix("fc00::/7"), "a private range (fc00::/7)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local (fe80::/10)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast (ff00::/8)"},
}

// Policy decides which guest flows the network opens on the host. The
// zero Policy is the default: public unicast addresses only.
type Policy struct {
	// HostAccess opens the host's loopback at the gateway address.
	HostAccess bool `json:"host_access,omitempty"`
	// HostPorts, with HostAccess, opens only these host ports (empty:
	// every port).
	HostPorts []int `json:"host_ports,omitempty"`
	// AllowCIDRs opens closed ranges (not the host's loopback, which only
	// HostAccess opens, nor the network's own addresses).
	AllowCIDRs []netip.Prefix `json:"allow_cidrs,omitempty"`
}

// Decide returns the verdict for a guest flow to dst. hostAddrs are the
// host's own addresses (closed like private ranges: a host service bound
// to 0.0.0.0 must not be reachable through them). Decide only reads its
// arguments; the caller dials Dial after an Allow, never before.
func (p *Policy) Decide(dst netip.AddrPort, hostAddrs []netip.Addr) Decision {
	a := vmm.UserAddressing
	ip := dst.Addr().Unmap()
	deny := func(why string) Decision { return Decision{Verdict: Deny, Reason: why} }
	if a.Prefix.Contains(ip) {
		switch {
		case ip == a.DNS && dst.Port() == 53:
			return Decision{Verdict: Allow, Reason: "the network's DNS forwarder", Resolver: true}
		case ip != a.Gateway:
			return deny("an address of the virtual network with no service")
		case !p.HostAccess:
			return deny("the host's loopback (at the gateway) is closed: use --host-access")
		case len(p.HostPorts) > 0 && !slices.Contains(p.HostPorts, int(dst.Port())):
			return deny("this host port is not opened by --host-access")
		}
		return Decision{Verdict: Allow, Reason: "host access", Dial: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), dst.Port())}
	}
	if ip.IsLoopback() {
		return deny("the host's loopback is reached only at the gateway with --host-access")
	}
	allow := Decision{Verdict: Allow, Reason: "public address", Dial: netip.AddrPortFrom(ip, dst.Port())}
	for _, c := range p.AllowCIDRs {
		if c.Contains(ip) {
			allow.Reason = "opened by --egress-allow-cidr " + c.String()
			return allow
		}
	}
	if slices.Contains(hostAddrs, ip) {
		return deny("the host's own address: use --host-access to reach the host")
	}
	for _, r := range closedRanges {
		if r.prefix.Contains(ip) {
			return deny(r.what + " is closed: use --egress-allow-cidr to open it")
		}
	}
	return allow
}
