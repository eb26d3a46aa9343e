package guestboot

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/vmm"
)

// GuestNetwork is GuestNetworkFor the default backend (vmm.Default), the
// one workspaces use. With no default backend the user network is taken
// to open nothing without host access (vmm.UserNetworkOf's safe
// assumption); such a VM could not start anyway.
func GuestNetwork(n *vmm.Network, hostname string) *channel.NetworkConfig {
	b, _ := vmm.Default()
	return GuestNetworkFor(n, hostname, vmm.UserNetworkOf(b))
}

// GuestNetworkFor is the setup the guest agent applies for network n on
// user network u: the NIC's static addressing in user mode, resolv.conf
// and /etc/hosts entries for localhost and the hostname.
func GuestNetworkFor(n *vmm.Network, hostname string, u vmm.UserNetwork) *channel.NetworkConfig {
	c := &channel.NetworkConfig{Hosts: []channel.HostEntry{
		{IP: "127.0.0.1", Names: []string{"localhost"}},
		{IP: "::1", Names: []string{"localhost", "ip6-localhost", "ip6-loopback"}},
	}}
	if n.Isolated() {
		// 127.0.1.1, as Debian does for a host without a fixed address.
		c.Hosts = append(c.Hosts, channel.HostEntry{IP: "127.0.1.1", Names: []string{hostname}})
		return c
	}
	a := vmm.UserAddressing
	c.Interface = "eth0" // the only NIC, named by the kernel
	c.Address = a.GuestPrefix().String()
	c.Gateway = a.Gateway.String()
	// When the outbound path is closed (slirp without host access) the
	// NAT forwards no DNS either: naming no server makes lookups fail at
	// once instead of timing out.
	if u.Open(n) {
		c.DNS = []string{a.DNS.String()}
	}
	if len(n.DNS) > 0 {
		c.DNS = c.DNS[:0]
		for _, d := range n.DNS {
			c.DNS = append(c.DNS, d.String())
		}
	}
	c.Hosts = append(c.Hosts, channel.HostEntry{IP: a.Guest.String(), Names: []string{hostname}})
	return c
}

// CheckForwards fails when a published host port cannot be bound, so a
// taken port is reported before anything boots. It binds each port and
// releases it at once: another program can still take the port before the
// VMM binds it (a race this cannot close), in which case the VM fails to
// start with the VMM's own error.
func CheckForwards(fws []vmm.Forward) error {
	for _, f := range fws {
		addr := netip.AddrPortFrom(f.HostIP, uint16(f.HostPort)).String()
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			switch {
			case errors.Is(err, syscall.EADDRINUSE):
				return fmt.Errorf("publish %s: host port %s is already in use: stop what listens there or publish another port", f, addr)
			case errors.Is(err, syscall.EADDRNOTAVAIL):
				return fmt.Errorf("publish %s: %s is not an address of this host: use 127.0.0.1 or one of the host's addresses", f, f.HostIP)
			case errors.Is(err, syscall.EACCES):
				return fmt.Errorf("publish %s: not allowed to listen on %s (ports below 1024 need privileges): publish a port of 1024 or above", f, addr)
			}
			return fmt.Errorf("publish %s: cannot listen on %s: %w", f, addr, err)
		}
		l.Close()
	}
	return nil
}
