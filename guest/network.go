//go:build linux

package guest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/channel"
)

// Files the network setup writes in the guest's root.
const (
	resolvConfPath = "/etc/resolv.conf"
	hostsPath      = "/etc/hosts"
)

// netState makes the network setup happen once per boot, although the host
// sends its hello on every connection.
type netState struct {
	mu   sync.Mutex
	done bool
}

// applyNetwork configures the NIC and writes /etc/resolv.conf and
// /etc/hosts, once; a failed attempt is retried by the next hello (every
// step can be repeated).
func (a *Agent) applyNetwork(n *channel.NetworkConfig) error {
	a.net.mu.Lock()
	defer a.net.mu.Unlock()
	if a.net.done {
		return nil
	}
	if err := configureNetwork(n, "/"); err != nil {
		return err
	}
	a.net.done = true
	return nil
}

// configureNetwork applies n, with the files under root (a test's temporary
// directory; "/" in the guest).
func configureNetwork(n *channel.NetworkConfig, root string) error {
	if n.Interface != "" {
		addr, err := netip.ParsePrefix(n.Address)
		if err != nil || !addr.Addr().Is4() {
			return fmt.Errorf("interface %s: address %q is not an IPv4 address with a prefix length", n.Interface, n.Address)
		}
		var gw netip.Addr
		if n.Gateway != "" {
			if gw, err = netip.ParseAddr(n.Gateway); err != nil || !gw.Is4() {
				return fmt.Errorf("interface %s: gateway %q is not an IPv4 address", n.Interface, n.Gateway)
			}
		}
		if err := configureInterface(n.Interface, addr, gw); err != nil {
			return err
		}
	}
	for _, s := range n.DNS {
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("DNS server %q is not an IP address", s)
		}
	}
	etc := filepath.Join(root, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	if err := writeSystemFile(filepath.Join(root, resolvConfPath), resolvConf(n.DNS)); err != nil {
		return err
	}
	old, err := os.ReadFile(filepath.Join(root, hostsPath))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", hostsPath, err)
	}
	return writeSystemFile(filepath.Join(root, hostsPath), mergeHosts(old, n.Hosts))
}

// configureInterface sets addr on the NIC, brings it up and, when gw is
// valid, adds a default route through it.
func configureInterface(name string, addr netip.Prefix, gw netip.Addr) error {
	// The driver registers the NIC while its module loads, so this wait
	// normally ends at the first look.
	if err := waitFor("/sys/class/net/"+name, 5*time.Second); err != nil {
		return fmt.Errorf("network interface: %w", err)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("network interface %s: %w", name, err)
	}
	a4 := addr.Addr().As4()
	ifa := unix.IfAddrmsg{Family: unix.AF_INET, Prefixlen: uint8(addr.Bits()), Scope: unix.RT_SCOPE_UNIVERSE, Index: uint32(ifi.Index)}
	// NLM_F_REPLACE keeps a repeated setup (after a failed attempt) from
	// failing with EEXIST.
	if err := netlinkDo(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, ifa,
		rtattr(unix.IFA_LOCAL, a4[:]), rtattr(unix.IFA_ADDRESS, a4[:])); err != nil {
		return fmt.Errorf("set address %s on %s: %w", addr, name, err)
	}
	if err := linkUp(name); err != nil {
		return err
	}
	if !gw.IsValid() {
		return nil
	}
	g4 := gw.As4()
	var oif [4]byte
	binary.NativeEndian.PutUint32(oif[:], uint32(ifi.Index))
	rtm := unix.RtMsg{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST}
	if err := netlinkDo(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, rtm,
		rtattr(unix.RTA_GATEWAY, g4[:]), rtattr(unix.RTA_OIF, oif[:])); err != nil {
		return fmt.Errorf("default route via %s on %s: %w", gw, name, err)
	}
	return nil
}

// rtattr encodes one route attribute (header and payload, padded to 4 bytes).
func rtattr(typ uint16, payload []byte) []byte {
	n := unix.SizeofRtAttr + len(payload)
	b := make([]byte, (n+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1))
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], payload)
	return b
}

// netlinkDo sends one rtnetlink request (a fixed-size body such as RtMsg or
// IfAddrmsg, then attributes) and waits for the kernel's acknowledgement.
// x/sys has the types but no request helper, and one message needs too
// little to pull in a netlink library.
func netlinkDo(typ uint16, flags uint16, body any, attrs ...[]byte) error {
	var msg bytes.Buffer
	msg.Write(make([]byte, unix.SizeofNlMsghdr)) // filled in below
	if err := binary.Write(&msg, binary.NativeEndian, body); err != nil {
		return err
	}
	for _, a := range attrs {
		msg.Write(a)
	}
	b := msg.Bytes()
	const seq = 1
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(b[8:], seq)

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	// A reply that never comes must not hang the hello forever.
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for r := buf[:n]; len(r) >= unix.SizeofNlMsghdr; {
			l := int(binary.NativeEndian.Uint32(r[0:]))
			if l < unix.SizeofNlMsghdr || l > len(r) {
				return errors.New("netlink: malformed reply")
			}
			mtype, mseq := binary.NativeEndian.Uint16(r[4:]), binary.NativeEndian.Uint32(r[8:])
			if mtype == unix.NLMSG_ERROR && mseq == seq {
				if l < unix.SizeofNlMsghdr+4 {
					return errors.New("netlink: short error reply")
				}
				if code := int32(binary.NativeEndian.Uint32(r[unix.SizeofNlMsghdr:])); code != 0 {
					return unix.Errno(-code)
				}
				return nil
			}
			r = r[min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(r)):]
		}
	}
}

// linkUp sets IFF_UP on an interface.
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s up: %w", name, err)
	}
	return nil
}

// resolvConf renders /etc/resolv.conf. Without servers it names none, so
// the resolver falls back to 127.0.0.1 and fails at once rather than
// waiting on a server that never answers.
func resolvConf(dns []string) []byte {
	var b strings.Builder
	b.WriteString("# Written by microagent at boot.\n")
	if len(dns) == 0 {
		b.WriteString("# This network has no DNS server.\n")
	}
	for _, s := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return []byte(b.String())
}

// mergeHosts returns the image's /etc/hosts with the entries added whose
// names it does not map yet (the image's own mappings win; a name may be
// given for several addresses, as localhost is for 127.0.0.1 and ::1).
func mergeHosts(old []byte, want []channel.HostEntry) []byte {
	have := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(old))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			have[f[i]] = true
		}
	}
	out := append([]byte{}, old...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	for _, e := range want {
		var missing []string
		for _, n := range e.Names {
			if !have[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			out = fmt.Appendf(out, "%s\t%s\n", e.IP, strings.Join(missing, " "))
		}
	}
	return out
}

// writeSystemFile replaces path atomically (a temporary file in the same
// directory, fsync, rename; a symlink at path is replaced, not followed).
// The mode is 0644: every user in the guest must read these files.
func writeSystemFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
