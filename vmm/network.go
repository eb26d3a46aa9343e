package vmm

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// NetworkMode says how a guest is connected.
type NetworkMode string

// Network modes.
const (
	// NetworkUser gives the guest one NIC behind a user-mode NAT that runs
	// inside the VMM process (no privileges, no host interfaces). The empty
	// mode means NetworkUser.
	NetworkUser NetworkMode = "user"
	// NetworkIsolated gives the guest no NIC at all: it sees only lo.
	NetworkIsolated NetworkMode = "isolated"
)

// ParseNetworkMode reads a --network value.
func ParseNetworkMode(s string) (NetworkMode, error) {
	switch m := NetworkMode(s); m {
	case NetworkUser, NetworkIsolated:
		return m, nil
	case "":
		return NetworkUser, nil
	}
	return "", fmt.Errorf("unknown network mode %q: use user or isolated", s)
}

// Forward publishes a guest TCP port on a host address.
type Forward struct {
	// HostIP is the host address to listen on (IPv4).
	HostIP netip.Addr
	// HostPort and GuestPort are TCP ports (1-65535).
	HostPort, GuestPort int
}

// String renders the forward as a full --publish spec.
func (f Forward) String() string {
	return fmt.Sprintf("%s:%d:%d/tcp", f.HostIP, f.HostPort, f.GuestPort)
}

// DefaultPublishIP is the host address a --publish spec without one binds:
// loopback, so a published port is not exposed to the host's network unless
// asked for.
var DefaultPublishIP = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// ParseForward reads a publish spec, [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp].
// The host address defaults to DefaultPublishIP.
func ParseForward(spec string) (Forward, error) {
	bad := func(why string) (Forward, error) {
		return Forward{}, fmt.Errorf("publish %q: %s: use [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp], e.g. 127.0.0.1:8080:80", spec, why)
	}
	s, proto, hasProto := strings.Cut(spec, "/")
	if hasProto && proto != "tcp" {
		if proto == "udp" {
			return bad("only tcp ports can be published")
		}
		return bad(fmt.Sprintf("unknown protocol %q", proto))
	}
	parts := strings.Split(s, ":")
	f := Forward{HostIP: DefaultPublishIP}
	switch len(parts) {
	case 2:
	case 3:
		ip, err := netip.ParseAddr(parts[0])
		if err != nil || !ip.Is4() {
			return bad(fmt.Sprintf("host address %q is not an IPv4 address", parts[0]))
		}
		f.HostIP = ip
		parts = parts[1:]
	default:
		return bad("need a host port and a guest port")
	}
	var err error
	if f.HostPort, err = parsePort(parts[0]); err != nil {
		return bad("host port: " + err.Error())
	}
	if f.GuestPort, err = parsePort(parts[1]); err != nil {
		return bad("guest port: " + err.Error())
	}
	return f, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("%d is out of range 1-65535", n)
	}
	return n, nil
}

// Network describes a guest's network. A nil *Network in Config means no
// NIC, as NetworkIsolated does.
type Network struct {
	// Mode is NetworkUser (or empty) or NetworkIsolated.
	Mode NetworkMode
	// Forwards publish guest TCP ports on the host (user mode only).
	Forwards []Forward
	// HostAccess lets the guest reach services on the host's loopback
	// through UserAddressing.Gateway. Without it the backend must block
	// that; a backend that cannot block host loopback alone (QEMU's slirp,
	// see UserNetwork.Outbound) blocks all outbound traffic instead, so
	// there HostAccess also opens the way out.
	HostAccess bool
	// HostPorts, with HostAccess, opens only these ports of the host's
	// loopback (empty: all of them).
	HostPorts []int
	// AllowCIDRs opens ranges the user network closes by default (private
	// ranges, link-local, the host's own addresses; never the host's
	// loopback, which HostAccess opens at the gateway).
	AllowCIDRs []netip.Prefix
	// AllowNames, when any is given, limits the way out to these names
	// (ParseAllowName: a host, or .SUFFIX for a domain and every name in
	// it): the network's resolver refuses other names, and the guest
	// reaches only addresses it resolved for these names (HostAccess and
	// AllowCIDRs still open what they open).
	AllowNames []string
	// EgressNone refuses every outbound flow and every name (an allowlist
	// with nothing in it) but keeps the NIC and its published ports;
	// HostAccess and AllowCIDRs still open what they open.
	EgressNone bool
	// EgressLog is the file where the user network appends its decisions
	// (JSON lines, rotated by size; empty: none kept). Only a backend whose
	// network decides each flow writes it.
	EgressLog string
	// DNS are the nameservers the guest uses instead of the NAT's own
	// forwarder (UserAddressing.DNS), e.g. UserAddressing.Gateway for a
	// resolver on the host's loopback (which needs HostAccess). They are
	// reached over the NAT's outbound path (see CheckUserNetwork).
	DNS []netip.Addr
	// DNSUpstreams are the resolvers the network's own forwarder
	// (UserAddressing.DNS) asks, in turn, instead of the host's (its
	// /etc/resolv.conf): a split-horizon or filtering resolver of the
	// operator's, say. The host asks them; the guest never reaches them.
	DNSUpstreams []netip.AddrPort
	// Swap, when set, swaps placeholders for secret values on the way out
	// (see Swap). It is built for each boot and never stored.
	Swap *Swap `json:"-"`
}

// ParseSwapHost checks a host a swapped secret (--secret-egress) may be
// sent to: ParseAllowName's syntax, and not a whole top-level domain
// (.com would send the value to any host the guest names there).
func ParseSwapHost(s string) (string, error) {
	h, err := ParseAllowName(s)
	if err != nil {
		return "", err
	}
	if d, ok := strings.CutPrefix(h, "."); ok && !strings.Contains(d, ".") {
		return "", fmt.Errorf("%q covers a whole top-level domain: name the value's hosts (api.example.com, or .example.com)", s)
	}
	return h, nil
}

// ParseAllowName reads an --egress-allow value: a host name (pypi.org) or
// a leading dot and a domain (.github.com: the domain and every name in
// it). It returns the name in lower case without a final dot.
func ParseAllowName(s string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("--egress-allow %q: %s: give a host name (pypi.org) or a domain with a leading dot (.github.com)", s, why)
	}
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	host := strings.TrimPrefix(name, ".")
	switch {
	case host == "":
		return bad("empty")
	case strings.Contains(host, "*"):
		return bad("no wildcards: a leading dot covers every name in a domain")
	case len(host) > 253:
		return bad("longer than a DNS name can be")
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return bad("an address, not a name (open an address range with --egress-allow-cidr)")
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return bad("an empty or over-long label")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return bad(fmt.Sprintf("%q is not allowed in a name", c))
			}
		}
	}
	return name, nil
}

// MatchName reports whether name (a DNS name, with or without its final
// dot, any case) is covered by patterns (as ParseAllowName returns them):
// it is listed, or it is within a listed .SUFFIX (which also covers SUFFIX
// itself). The egress allowlist and the secret swap's hosts match alike.
func MatchName(patterns []string, name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, a := range patterns {
		if suffix, ok := strings.CutPrefix(a, "."); ok {
			if name == suffix || strings.HasSuffix(name, a) {
				return true
			}
		} else if name == a {
			return true
		}
	}
	return false
}

// HostAccessTo reports whether n opens port of the host's loopback.
func (n *Network) HostAccessTo(port int) bool {
	return n != nil && n.HostAccess && (len(n.HostPorts) == 0 || slices.Contains(n.HostPorts, port))
}

// Isolated reports whether n gives the guest no NIC.
func (n *Network) Isolated() bool { return n == nil || n.Mode == NetworkIsolated }

// Validate checks n against the rules every backend shares.
func (n *Network) Validate() error {
	if n == nil {
		return nil
	}
	if _, err := ParseNetworkMode(string(n.Mode)); err != nil {
		return err
	}
	if n.Isolated() {
		if len(n.Forwards) > 0 {
			return fmt.Errorf("cannot publish %s: the isolated network has no network device; use --network user", n.Forwards[0])
		}
		if n.HostAccess {
			return fmt.Errorf("host access needs a network device: the isolated network has none; use --network user")
		}
		if len(n.HostPorts) > 0 || len(n.AllowCIDRs) > 0 || len(n.AllowNames) > 0 || n.EgressNone {
			return fmt.Errorf("opening host ports or address ranges needs a network device: the isolated network has none; use --network user")
		}
		if len(n.DNS) > 0 || len(n.DNSUpstreams) > 0 {
			return fmt.Errorf("a DNS server needs a network device: the isolated network has none; use --network user")
		}
		return nil
	}
	for _, u := range n.DNSUpstreams {
		if !u.IsValid() || u.Port() == 0 || u.Addr().IsUnspecified() {
			return fmt.Errorf("DNS upstream %q: give a resolver's address and port, e.g. 127.0.0.1:53", u)
		}
	}
	for _, d := range n.DNS {
		if !d.Is4() || d.IsUnspecified() {
			return fmt.Errorf("DNS server %q: give an IPv4 address (the guest network is IPv4 only), e.g. %s for a resolver on the host's loopback", d, UserAddressing.Gateway)
		}
	}
	if len(n.HostPorts) > 0 && !n.HostAccess {
		return fmt.Errorf("host ports %v are opened only with host access: add --host-access", n.HostPorts)
	}
	for _, p := range n.HostPorts {
		if p < 1 || p > 65535 {
			return fmt.Errorf("host port %d is out of range 1-65535", p)
		}
	}
	for _, c := range n.AllowCIDRs {
		if !c.IsValid() || c != c.Masked() {
			return fmt.Errorf("address range %s: give a network address with its prefix length, e.g. 192.168.1.0/24", c)
		}
		if c.Addr().Unmap().IsLoopback() || c.Contains(netip.AddrFrom4([4]byte{127, 0, 0, 1})) || c.Contains(netip.IPv6Loopback()) {
			return fmt.Errorf("address range %s covers the host's loopback, which only --host-access opens (at %s)", c, UserAddressing.Gateway)
		}
	}
	for _, a := range n.AllowNames {
		if _, err := ParseAllowName(a); err != nil {
			return err
		}
	}
	if n.EgressNone && len(n.AllowNames) > 0 {
		return fmt.Errorf("--egress none refuses every name: drop it or the --egress-allow names")
	}
	for _, d := range n.DNS {
		if (len(n.AllowNames) > 0 || n.EgressNone) && d != UserAddressing.Gateway {
			return fmt.Errorf("DNS server %s: with --egress-allow or --egress none the guest resolves names through the network's resolver (or one on the host's loopback at %s); drop --dns", d, UserAddressing.Gateway)
		}
	}
	// The gateway stands for the host's loopback only with host access
	// (see HostAccess); without it a server there would never answer.
	for _, d := range n.DNS {
		if d == UserAddressing.Gateway && !n.HostAccessTo(53) {
			return fmt.Errorf("DNS server %s is the host's loopback, which the guest reaches only with host access to port 53: add --host-access", d)
		}
	}
	seen := map[int]Forward{}
	for _, f := range n.Forwards {
		if !f.HostIP.Is4() || f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 {
			return fmt.Errorf("invalid forward %+v: need an IPv4 host address and ports 1-65535", f)
		}
		// Ports on different addresses could coexist, but one port named
		// twice is almost always a mistake; refuse it plainly.
		if prev, ok := seen[f.HostPort]; ok {
			return fmt.Errorf("host port %d is published twice (%s and %s)", f.HostPort, prev, f)
		}
		seen[f.HostPort] = f
	}
	return nil
}

// UserNetwork says what a backend's user-mode network gives a guest on
// this host.
type UserNetwork struct {
	// Provider names the implementation, such as "passt" or "slirp".
	Provider string
	// Outbound is true when the guest reaches other hosts and the NAT's
	// DNS forwarder (UserAddressing.DNS) without HostAccess, the host's
	// loopback staying closed. False means outbound traffic needs
	// HostAccess, which then opens the host's loopback too.
	Outbound bool
}

// UserNetworker is implemented by backends that can say what their
// user-mode network offers on this host.
type UserNetworker interface {
	UserNetwork() UserNetwork
}

// UserNetworkOf returns what backend b's user-mode network offers; a
// backend that does not say is taken to open nothing without HostAccess
// (the safe assumption).
func UserNetworkOf(b Backend) UserNetwork {
	if un, ok := b.(UserNetworker); ok {
		return un.UserNetwork()
	}
	return UserNetwork{}
}

// Open reports whether the guest's outbound path (other hosts, the NAT's
// DNS forwarder) is open with network n on user network u.
func (u UserNetwork) Open(n *Network) bool {
	return !n.Isolated() && (u.Outbound || n.HostAccess)
}

// CheckUserNetwork checks n against what user network u can give: DNS
// servers need an open outbound path. It does not repeat Validate.
func (n *Network) CheckUserNetwork(u UserNetwork) error {
	if n.Isolated() || len(n.DNS) == 0 || u.Open(n) {
		return nil
	}
	name := u.Provider
	if name == "" {
		name = "this backend's user network"
	}
	return fmt.Errorf("DNS server %s is reached through the network's outbound path, which %s opens only with host access: add --host-access", n.DNS[0], name)
}

// Addressing is the IPv4 setup the guest must apply statically on its NIC
// in user mode.
type Addressing struct {
	// Guest is the guest's address within Prefix.
	Guest netip.Addr
	// Prefix is the virtual network.
	Prefix netip.Prefix
	// Gateway is the NAT's router; in user mode it also stands for the
	// host's loopback when HostAccess is on.
	Gateway netip.Addr
	// DNS is the NAT's DNS forwarder (it answers only when outbound
	// traffic is allowed).
	DNS netip.Addr
}

// GuestPrefix is the guest address with the network's prefix length, as
// "10.0.2.15/24".
func (a Addressing) GuestPrefix() netip.Prefix {
	return netip.PrefixFrom(a.Guest, a.Prefix.Bits())
}

// UserAddressing is the user-mode network every backend must provide (the
// classic slirp layout; the QEMU backend passes it explicitly, so it does
// not depend on slirp's defaults).
var UserAddressing = Addressing{
	Guest:   netip.AddrFrom4([4]byte{10, 0, 2, 15}),
	Prefix:  netip.MustParsePrefix("10.0.2.0/24"),
	Gateway: netip.AddrFrom4([4]byte{10, 0, 2, 2}),
	DNS:     netip.AddrFrom4([4]byte{10, 0, 2, 3}),
}
