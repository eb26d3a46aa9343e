package qemu

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/passt"
	"github.com/microagent-dev/microagent/vmm/usernet"
)

// User networks the backend can serve (Options.UserNet).
const (
	// UserNetHelper is microagent's own network (vmm/usernet): every
	// guest flow passes its policy; the default.
	UserNetHelper = ""
	// UserNetPasst is passt, kept as the benchmark's floor.
	UserNetPasst = "passt"
	// UserNetSlirp is QEMU's built-in slirp (comparisons).
	UserNetSlirp = "slirp"
)

// UserNetwork implements vmm.UserNetworker. The helper and passt open
// outbound traffic (the helper only to public addresses by default);
// slirp's only guard closes it together with the host's loopback.
func (b *Backend) UserNetwork() vmm.UserNetwork {
	switch b.opts.UserNet {
	case UserNetPasst:
		return vmm.UserNetwork{Provider: "passt", Outbound: true}
	case UserNetSlirp:
		return vmm.UserNetwork{Provider: "slirp"}
	}
	return vmm.UserNetwork{Provider: usernet.BinaryName, Outbound: true}
}

// SlirpFallback explains what slirp gives (UserNetSlirp).
const SlirpFallback = "QEMU's slirp (Options.UserNet): it blocks all outbound traffic (and DNS) unless --host-access is given, and that also opens the host's loopback"

// netProcess is a user network's own process (the helper or passt).
type netProcess interface {
	PID() int
	Done() <-chan struct{}
	Wait() error
	Kill() error
}

// startNetwork starts the process serving a user-mode network and returns
// the VMM's end of its socket pair; nil, nil for no NIC or slirp. A
// network that cannot start fails the machine's start: the VM never boots
// offline.
func (b *Backend) startNetwork(mc *MachineConfig) (netProcess, *os.File, error) {
	if mc.Network.Isolated() {
		return nil, nil, nil
	}
	if mc.Network.Swap != nil && (b.opts.UserNet == UserNetSlirp || b.opts.UserNet == UserNetPasst) {
		return nil, nil, fmt.Errorf("qemu: network: %s cannot swap secrets at the egress (--secret-egress): only %s can", b.opts.UserNet, usernet.BinaryName)
	}
	switch b.opts.UserNet {
	case UserNetSlirp:
		return nil, nil, nil
	case UserNetPasst:
		bin, err := passt.Find(b.opts.Passt)
		if err != nil {
			return nil, nil, fmt.Errorf("qemu: network: %w", err)
		}
		p, f, err := passt.Start(passt.Config{Binary: bin, Network: mc.Network, DieWithParent: mc.DieWithParent})
		if err != nil {
			return nil, nil, fmt.Errorf("qemu: network: %w", err)
		}
		return p, f, nil
	case UserNetHelper:
		var logs []io.Writer
		if b.opts.NetLog != nil {
			logs = append(logs, lockedWriter{&b.logMu, b.opts.NetLog})
		}
		var file *usernet.Log
		if mc.Network.EgressLog != "" {
			var err error
			if file, err = usernet.OpenLog(mc.Network.EgressLog); err != nil {
				return nil, nil, fmt.Errorf("qemu: network: %w", err)
			}
			logs = append(logs, file)
		}
		resolvers := b.opts.Resolvers
		if len(mc.Network.DNSUpstreams) > 0 {
			resolvers = mc.Network.DNSUpstreams
		}
		p, f, err := usernet.Start(usernet.StartConfig{Binary: b.opts.NetHelper, Network: mc.Network,
			Resolvers: resolvers, Log: io.MultiWriter(logs...), DieWithParent: mc.DieWithParent})
		if err != nil {
			if file != nil {
				file.Close()
			}
			return nil, nil, fmt.Errorf("qemu: network: %w", err)
		}
		if file != nil {
			// The helper's log is drained before it counts as exited.
			go func() { <-p.Done(); file.Close() }()
		}
		return p, f, nil
	}
	return nil, nil, fmt.Errorf("qemu: unknown user network %q: use %q (the default), %q or %q",
		b.opts.UserNet, UserNetHelper, UserNetPasst, UserNetSlirp)
}

// lockedWriter serialises writes of every machine's helper to one writer.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// netArgs renders the guest's network as QEMU arguments: nothing for no
// NIC; with streamFD >= 0 a stream netdev on that descriptor (the VMM's
// end of the network helper's or passt's socket pair); otherwise slirp (QEMU's built-in
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
func netArgs(n *vmm.Network, streamFD int) []string {
	if n.Isolated() {
		return nil
	}
	if streamFD >= 0 {
		// The helper (or passt) does the addressing, forwards and policy;
		// the MAC is the one passt's readiness probe used (the helper's
		// usernet.GuestMAC is the same).
		return []string{"-netdev", fmt.Sprintf("stream,id=n0,server=off,addr.type=fd,addr.str=%d", streamFD),
			"-device", "virtio-net-device,netdev=n0,mac=" + usernet.GuestMAC.String()}
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
