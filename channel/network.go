package channel

// NetworkConfig is the guest's network setup. The host knows the addressing
// of the network it attached, so the agent applies it statically (no DHCP
// client in the guest).
type NetworkConfig struct {
	// Interface is the NIC to configure ("eth0"); empty means the guest has
	// no NIC and only the files below are written.
	Interface string `json:"interface,omitempty"`
	// Address is the interface's IPv4 address with its prefix length, as
	// "10.0.2.15/24".
	Address string `json:"address,omitempty"`
	// Gateway is the default route's IPv4 router; empty: no default route.
	Gateway string `json:"gateway,omitempty"`
	// DNS are the nameservers written to /etc/resolv.conf; none leaves it
	// without a nameserver, so lookups fail at once instead of timing out.
	DNS []string `json:"dns,omitempty"`
	// Hosts are entries the agent makes sure /etc/hosts has (localhost and
	// the hostname).
	Hosts []HostEntry `json:"hosts,omitempty"`
}

// HostEntry is one /etc/hosts line.
type HostEntry struct {
	IP    string   `json:"ip"`
	Names []string `json:"names"`
}
