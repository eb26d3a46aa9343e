package qemu

import (
	"fmt"
	"os"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/passt"
)

// UserNetwork implements vmm.UserNetworker: passt when it is installed
// (and Options.Slirp is off), which opens outbound traffic and keeps the
// host's loopback closed; else slirp, whose only guard closes both.
func (b *Backend) UserNetwork() vmm.UserNetwork {
	if _, err := b.passtBinary(); err == nil {
		return vmm.UserNetwork{Provider: "passt", Outbound: true}
	}
	return vmm.UserNetwork{Provider: "slirp"}
}

// passtBinary resolves passt, or fails when it is missing or turned off.
func (b *Backend) passtBinary() (string, error) {
	if b.opts.Slirp {
		return "", fmt.Errorf("passt turned off (Options.Slirp)")
	}
	return passt.Find(b.opts.Passt)
}

// SlirpFallback explains what a user network without passt gives (the fix
// is passt.InstallHint).
const SlirpFallback = "passt not found: the user network falls back to QEMU's slirp, which blocks all outbound traffic (and DNS) unless --host-access is given, and that also opens the host's loopback"

// startPasst starts passt for a user-mode network; nil, nil when the
// network has no NIC or slirp is used.
func (b *Backend) startPasst(mc *MachineConfig) (*passt.Process, *os.File, error) {
	if mc.Network.Isolated() {
		return nil, nil, nil
	}
	bin, err := b.passtBinary()
	if err != nil {
		return nil, nil, nil
	}
	p, f, err := passt.Start(passt.Config{Binary: bin, Network: mc.Network, DieWithParent: mc.DieWithParent})
	if err != nil {
		return nil, nil, fmt.Errorf("qemu: network: %w", err)
	}
	return p, f, nil
}

// netArgs renders the guest's network as QEMU arguments: nothing for no
// NIC; with passtFD >= 0 a stream netdev on that descriptor (the VMM's end
// of passt's socket pair, see vmm/passt); otherwise slirp (QEMU's built-in
// user-mode NAT), all behind a virtio-net device.
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
func netArgs(n *vmm.Network, passtFD int) []string {
	if n.Isolated() {
		return nil
	}
	if passtFD >= 0 {
		// passt does the addressing, forwards and host-loopback policy
		// (passt.Args); the MAC is the one passt's readiness probe used.
		return []string{"-netdev", fmt.Sprintf("stream,id=n0,server=off,addr.type=fd,addr.str=%d", passtFD),
			"-device", "virtio-net-device,netdev=n0,mac=" + passt.GuestMAC.String()}
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
