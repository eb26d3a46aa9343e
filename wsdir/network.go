package wsdir

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/microagent-dev/microagent/vmm"
)

// networkKey is the manifest's declarations slot for the network.
//
// The network lives in the declarations (like the secrets) rather than in
// a new top-level field, so the manifest stays at version 1: a manifest
// without it is a workspace from before networking and gets the default
// (user mode, no published ports, no host access), and an older
// microagent that does not know the slot keeps it untouched when it
// rewrites the manifest (and boots the workspace without a NIC, the safe
// direction).
const networkKey = "network"

// NetworkConfig is a workspace's network as its manifest keeps it and as
// Info reports it.
type NetworkConfig struct {
	// Mode is "user" (NAT, the default) or "isolated" (no NIC).
	Mode vmm.NetworkMode `json:"mode"`
	// Publish are the guest TCP ports published on the host; every start
	// binds them again.
	Publish []Port `json:"publish,omitempty"`
	// HostAccess lets the guest reach the host's loopback services.
	HostAccess bool `json:"hostAccess,omitempty"`
	// HostPorts, with HostAccess, opens only these host ports (empty:
	// all). An older microagent ignores it and opens every port, as
	// --host-access did then.
	HostPorts []int `json:"hostPorts,omitempty"`
	// AllowCIDRs are address ranges the network closes by default that
	// the workspace opens (--egress-allow-cidr).
	AllowCIDRs []netip.Prefix `json:"allowCIDRs,omitempty"`
	// AllowNames, when any is given, limits the way out to these names
	// (--egress-allow). An older microagent ignores it and lets every
	// name out: this slot is only as strong as the microagent reading it.
	AllowNames []string `json:"egressAllow,omitempty"`
	// EgressNone refuses all outbound traffic (--egress none); an older
	// microagent ignores it, like AllowNames.
	EgressNone bool `json:"egressNone,omitempty"`
	// DNS are the guest's nameservers, instead of the NAT's forwarder.
	DNS []netip.Addr `json:"dns,omitempty"`
	// DNSUpstreams are the resolvers the network's forwarder asks instead
	// of the host's (--dns-upstream).
	DNSUpstreams []netip.AddrPort `json:"dnsUpstream,omitempty"`
}

// Port is one published port.
type Port struct {
	HostIP    netip.Addr `json:"hostIP"`
	HostPort  int        `json:"hostPort"`
	GuestPort int        `json:"guestPort"`
	// Protocol is always "tcp" (the only one that can be published).
	Protocol string `json:"protocol"`
}

// String renders the port as HOST_IP:HOST_PORT->GUEST_PORT/tcp.
func (p Port) String() string {
	return fmt.Sprintf("%s:%d->%d/%s", p.HostIP, p.HostPort, p.GuestPort, p.Protocol)
}

// NewNetworkConfig describes n as a manifest keeps it.
func NewNetworkConfig(n vmm.Network) NetworkConfig {
	mode := n.Mode
	if mode == "" {
		mode = vmm.NetworkUser
	}
	c := NetworkConfig{Mode: mode, HostAccess: n.HostAccess, HostPorts: n.HostPorts, AllowCIDRs: n.AllowCIDRs, AllowNames: n.AllowNames, EgressNone: n.EgressNone, DNS: n.DNS, DNSUpstreams: n.DNSUpstreams}
	for _, f := range n.Forwards {
		c.Publish = append(c.Publish, Port{HostIP: f.HostIP, HostPort: f.HostPort, GuestPort: f.GuestPort, Protocol: "tcp"})
	}
	return c
}

// VMM returns the network to give the VM.
func (c NetworkConfig) VMM() vmm.Network {
	n := vmm.Network{Mode: c.Mode, HostAccess: c.HostAccess, HostPorts: c.HostPorts, AllowCIDRs: c.AllowCIDRs, AllowNames: c.AllowNames, EgressNone: c.EgressNone, DNS: c.DNS, DNSUpstreams: c.DNSUpstreams}
	for _, p := range c.Publish {
		n.Forwards = append(n.Forwards, vmm.Forward{HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort})
	}
	return n
}

// Network returns the workspace's network; a manifest without one (a
// workspace created before networking) gets the default: user mode, no
// published ports, no host access.
func (m *Manifest) Network() (NetworkConfig, error) {
	raw, ok := m.Declarations[networkKey]
	if !ok {
		return NetworkConfig{Mode: vmm.NetworkUser}, nil
	}
	var c NetworkConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("workspace %s: the network in its manifest is corrupt (%v): delete the workspace and create it again", m.Name, err)
	}
	for _, p := range c.Publish {
		if p.Protocol != "tcp" {
			return c, fmt.Errorf("workspace %s: the network in its manifest publishes port %d over %q, which this microagent cannot: upgrade microagent", m.Name, p.HostPort, p.Protocol)
		}
	}
	n := c.VMM()
	if err := n.Validate(); err != nil {
		return c, fmt.Errorf("workspace %s: the network in its manifest is invalid (%v): delete the workspace and create it again", m.Name, err)
	}
	if c.Mode == "" {
		c.Mode = vmm.NetworkUser
	}
	return c, nil
}

// SetNetwork stores c in the manifest's declarations slot. The default
// network is stored too: the manifest then says what the workspace was
// created with, even if the default changes later.
func (m *Manifest) SetNetwork(c NetworkConfig) error {
	b, err := json.Marshal(c)
	if err != nil {
		return &Error{Name: m.Name, Op: "encode the network", Err: err}
	}
	if m.Declarations == nil {
		m.Declarations = map[string]json.RawMessage{}
	}
	m.Declarations[networkKey] = b
	return nil
}
