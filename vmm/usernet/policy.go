package usernet

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

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
	// Name is the allowed name the guest reached Dial through (its
	// stand-in address), empty otherwise. A TLS server name or HTTP Host
	// the guest sends on such a flow must be allowed too (CheckName).
	Name string
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
	// AllowNames, when any is given, limits the way out to the names
	// listed (vmm.Network.AllowNames): the DNS forwarder refuses other
	// names, and a public address is reached only through an address the
	// forwarder handed out for an allowed name (see Resolved).
	AllowNames []string `json:"allow_names,omitempty"`
	// None is an allowlist with nothing in it (vmm.Network.EgressNone).
	None bool `json:"none,omitempty"`
}

// PolicyOf is the policy of network n's flags.
func PolicyOf(n *vmm.Network) Policy {
	return Policy{HostAccess: n.HostAccess, HostPorts: n.HostPorts, AllowCIDRs: n.AllowCIDRs,
		AllowNames: n.AllowNames, None: n.EgressNone}
}

// String describes p in the words of its flags, for the egress log.
func (p Policy) String() string {
	var parts []string
	switch {
	case p.None:
		parts = append(parts, "egress none")
	case len(p.AllowNames) > 0:
		parts = append(parts, "egress only "+strings.Join(p.AllowNames, " "))
	default:
		parts = append(parts, "public addresses")
	}
	if len(p.AllowCIDRs) > 0 {
		parts = append(parts, fmt.Sprint("and ", p.AllowCIDRs))
	}
	if p.HostAccess {
		if len(p.HostPorts) > 0 {
			parts = append(parts, fmt.Sprint("host ports ", p.HostPorts))
		} else {
			parts = append(parts, "host access")
		}
	}
	return strings.Join(parts, ", ")
}

// Resolved is what the network's DNS forwarder handed out for an allowed
// name: the guest was given a stand-in address, the host side dials Real.
type Resolved struct {
	Name string
	Real netip.Addr
}

// Allowlist reports whether p limits the way out to AllowNames (none at
// all with None).
func (p *Policy) Allowlist() bool { return len(p.AllowNames) > 0 || p.None }

// AllowsName reports whether name is allowed (vmm.MatchName: listed, or
// within a listed .SUFFIX).
func (p *Policy) AllowsName(name string) bool { return vmm.MatchName(p.AllowNames, name) }

// Decide returns the verdict for a guest flow to dst. hostAddrs are the
// host's own addresses (closed like private ranges: a host service bound
// to 0.0.0.0 must not be reachable through them). resolved finds what the
// DNS forwarder handed out (nil: nothing was). Decide only reads its
// arguments; the caller dials Dial after an Allow, never before.
func (p *Policy) Decide(dst netip.AddrPort, hostAddrs []netip.Addr, resolved func(netip.Addr) (Resolved, bool)) Decision {
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
	if resolved != nil {
		if r, ok := resolved(ip); ok {
			return p.decideResolved(r, dst.Port(), hostAddrs)
		}
	}
	if ip.IsLoopback() {
		return deny("the host's loopback is reached only at the gateway with --host-access")
	}
	return p.decideAddr(ip, dst.Port(), hostAddrs, false)
}

// decideResolved decides a flow to the stand-in address of an allowed
// name by the real address behind it, which passes the same policy as if
// the guest had named it (a name resolving to a private address or to the
// host's loopback opens nothing that flags did not open).
func (p *Policy) decideResolved(r Resolved, port uint16, hostAddrs []netip.Addr) Decision {
	var d Decision
	switch {
	case !p.AllowsName(r.Name):
		// Handed out under a policy that allowed it, since revoked.
		d = Decision{Verdict: Deny, Reason: "no longer in the allowlist (revoked)"}
	case r.Real.IsLoopback():
		d = Decision{Verdict: Deny, Reason: "it resolves to the host's loopback, closed without --host-access"}
		if p.HostAccess && (len(p.HostPorts) == 0 || slices.Contains(p.HostPorts, int(port))) {
			d = Decision{Verdict: Allow, Reason: "host access", Dial: netip.AddrPortFrom(r.Real, port)}
		} else if p.HostAccess {
			d.Reason = "it resolves to the host's loopback, and this port is not opened by --host-access"
		}
	case vmm.UserAddressing.Prefix.Contains(r.Real):
		d = Decision{Verdict: Deny, Reason: "it resolves into the virtual network"}
	default:
		d = p.decideAddr(r.Real, port, hostAddrs, true)
		if d.Allowed() && d.Reason == "public address" {
			d.Reason = "allowed name"
		}
	}
	d.Reason = r.Name + ": " + d.Reason
	d.Name = r.Name
	return d
}

// decideAddr decides a flow to an address outside the virtual network
// that is not the host's loopback; named is true when the guest reached it
// through an allowed name.
func (p *Policy) decideAddr(ip netip.Addr, port uint16, hostAddrs []netip.Addr, named bool) Decision {
	deny := func(why string) Decision { return Decision{Verdict: Deny, Reason: why} }
	allow := Decision{Verdict: Allow, Reason: "public address", Dial: netip.AddrPortFrom(ip, port)}
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
	if p.Allowlist() && !named {
		if p.None {
			return deny("outbound traffic is off (--egress none)")
		}
		return deny("not in the allowlist: only names given with --egress-allow are reached, through the network's resolver")
	}
	return allow
}
