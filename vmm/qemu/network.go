package qemu

import (
	"fmt"

	"github.com/microagent-dev/microagent/vmm"
)

// netArgs renders the guest's network as QEMU arguments: nothing for no
// NIC, else slirp (QEMU's built-in user-mode NAT) behind a virtio-net
// device.
//
// slirp in QEMU 7.2 sends every connection to an address of its virtual
// network (the gateway 10.0.2.2 and any other alias) to the host's
// 127.0.0.1, and offers no switch to turn only that off (libslirp's
// disable_host_loopback is not exposed). The only way to keep host
// loopback services out of reach is restrict=on, which blocks all
// outbound traffic (TCP, UDP, DNS) while port forwards still work. So
// without HostAccess the guest can serve published ports but reach
// nothing; HostAccess turns restrict off, opening both host loopback and
// the way out.
func netArgs(n *vmm.Network) []string {
	if n.Isolated() {
		return nil
	}
	a := vmm.UserAddressing
	restrict := "on"
	if n.HostAccess {
		restrict = "off"
	}
	// The addresses are given explicitly, so the guest's static setup
	// (vmm.UserAddressing) never depends on slirp's defaults; IPv6 is off
	// because the guest configures only IPv4 (and slirp's IPv6 would be a
	// second path to the host's loopback).
	opts := fmt.Sprintf("user,id=n0,ipv6=off,net=%s,host=%s,dns=%s,dhcpstart=%s,restrict=%s",
		a.Prefix, a.Gateway, a.DNS, a.Guest, restrict)
	for _, f := range n.Forwards {
		opts += fmt.Sprintf(",hostfwd=tcp:%s:%d-%s:%d", f.HostIP, f.HostPort, a.Guest, f.GuestPort)
	}
	return []string{"-netdev", opts, "-device", "virtio-net-device,netdev=n0"}
}
