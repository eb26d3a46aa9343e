// Package passt runs passt (https://passt.top), an unprivileged user-mode
// network that gives a VM outbound TCP, UDP and DNS through ordinary host
// sockets. It is no longer the default (vmm/usernet is, with a policy);
// it is kept as the benchmark's floor. It has no egress policy, and with
// --no-map-gw it still forwards 127/8 to the host's loopback for a root
// guest that routes it via the gateway (route_localnet). One passt serves one VM;
// the VMM gets the other end of a connected socket pair, so there is no
// socket file to create, protect or clean up.
//
// Lifetime: passt is started with --fd, which makes it quit as soon as its
// peer (the VMM) closes the socket, so it never outlives the VM. With
// DieWithParent it also gets SIGKILL when its parent dies, which covers
// the moment between its start and the VMM's.
package passt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/internal/netproc"
)

// DefaultBinary is the passt program looked up in PATH.
const DefaultBinary = "passt"

// InstallHint says how to get passt.
const InstallHint = "apt-get install passt"

// GuestMAC is the guest NIC's MAC address the VMM must use (QEMU's default
// for the first NIC). passt learns the guest's MAC from the frames it
// receives; the readiness probe sends one from this address so passt never
// addresses the guest wrongly.
var GuestMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// ReadyTimeout bounds the wait for passt to answer its readiness probe.
const ReadyTimeout = 10 * time.Second

// Find resolves the passt program (binary empty: DefaultBinary from PATH).
func Find(binary string) (string, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	p, err := exec.LookPath(binary)
	if err != nil {
		return "", fmt.Errorf("passt not found (%s): %s", binary, InstallHint)
	}
	return p, nil
}

// Config describes one passt instance.
type Config struct {
	// Binary is the passt program (empty: DefaultBinary from PATH).
	Binary string
	// Network is the guest's network (user mode).
	Network *vmm.Network
	// DieWithParent sends passt SIGKILL when the calling process dies.
	DieWithParent bool
}

// Args renders passt's command line (without the program name) for a
// socket passed as descriptor fd.
func Args(n *vmm.Network, fd int) []string {
	a := vmm.UserAddressing
	args := []string{
		"--foreground", "--quiet", "--ipv4-only",
		"--fd", strconv.Itoa(fd),
		"--address", a.Guest.String(),
		"--netmask", strconv.Itoa(a.Prefix.Bits()),
		"--gateway", a.Gateway.String(),
		// Queries to UserAddressing.DNS go to the first nameserver of the
		// host's /etc/resolv.conf.
		"--dns-forward", a.DNS.String(),
	}
	if !n.HostAccess {
		// By default passt maps the gateway address to the host's
		// loopback; --no-map-gw keeps the host's loopback out of reach.
		args = append(args, "--no-map-gw")
	}
	for _, f := range n.Forwards {
		args = append(args, "--tcp-ports", fmt.Sprintf("%s/%d:%d", f.HostIP, f.HostPort, f.GuestPort))
	}
	return args
}

// Process is a running passt.
type Process struct {
	*netproc.Process
	stderr *tail
}

// Start runs passt for cfg.Network and waits until it answers on the
// socket (an ARP request for the gateway, answered once passt has bound
// the published ports and entered its loop). It returns the VMM's end of
// the socket, which the caller hands to the VMM and then closes.
func Start(cfg Config) (*Process, *os.File, error) {
	if cfg.Network.Isolated() {
		return nil, nil, errors.New("passt: the isolated network has no NIC to serve")
	}
	bin, err := Find(cfg.Binary)
	if err != nil {
		return nil, nil, err
	}
	ours, theirs, err := netproc.SocketPair("passt")
	if err != nil {
		return nil, nil, fmt.Errorf("passt: %w", err)
	}
	defer theirs.Close() // passt has its own copy once started

	args := Args(cfg.Network, 3)
	cmd := exec.Command(bin, args...)
	cmd.Env = vmm.ChildEnv() // nothing of the caller's: no backend token, no secret value
	cmd.ExtraFiles = []*os.File{theirs}
	p := &Process{stderr: &tail{max: 8 << 10}}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if cfg.DieWithParent {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	} else {
		// Own session, like the VMM it serves; it ends with the VMM's
		// end of the socket.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	describe := func(err error) error {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("passt (pid %d) exited: %v: %s", cmd.Process.Pid, ee, p.stderr.lines())
		}
		return err
	}
	if p.Process, err = netproc.Start("passt", cmd, cfg.DieWithParent, nil, describe); err != nil {
		ours.Close()
		return nil, nil, fmt.Errorf("passt: starting %s: %w", bin, err)
	}
	theirs.Close()
	if err := p.probe(ours); err != nil {
		ours.Close()
		p.Kill()
		msg := fmt.Sprintf("passt (pid %d) did not come up: %v", p.PID(), err)
		if t := p.stderr.lines(); t != "" {
			msg += ": " + t
		}
		return nil, nil, errors.New(msg)
	}
	return p, ours, nil
}

// probe sends an ARP request for the gateway in QEMU's stream framing
// (a 32-bit big-endian length, then the frame) and waits for the reply:
// passt reads its socket only after its setup, so a reply means it is
// ready, and an early exit shows up as the socket's end.
func (p *Process) probe(f *os.File) error {
	c, err := net.FileConn(f) // a dup: f stays the caller's
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ReadyTimeout))
	a := vmm.UserAddressing
	req := arpFrame(GuestMAC, a.Guest.As4(), a.Gateway.As4())
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(req)))
	if _, err := c.Write(append(msg, req...)); err != nil {
		return fmt.Errorf("sending the readiness probe: %w", err)
	}
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return p.probeError(err)
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > 1<<17 {
			return fmt.Errorf("bad frame length %d from passt", n)
		}
		frame := make([]byte, n)
		if _, err := io.ReadFull(c, frame); err != nil {
			return p.probeError(err)
		}
		if isARPReply(frame, a.Gateway.As4()) {
			return nil
		}
	}
}

func (p *Process) probeError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		select {
		case <-p.Done():
		case <-time.After(time.Second):
		}
		return errors.New("it exited before answering")
	}
	return fmt.Errorf("waiting for its answer: %w", err)
}

// arpFrame is an Ethernet ARP request from (mac, ip) for target.
func arpFrame(mac net.HardwareAddr, ip, target [4]byte) []byte {
	f := make([]byte, 0, 42)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff) // broadcast
	f = append(f, mac...)
	f = append(f, 0x08, 0x06)             // ARP
	f = append(f, 0, 1, 0x08, 0x00, 6, 4) // Ethernet, IPv4
	f = append(f, 0, 1)                   // request
	f = append(f, mac...)
	f = append(f, ip[:]...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	return append(f, target[:]...)
}

// isARPReply reports whether frame is an ARP reply telling target's MAC.
func isARPReply(frame []byte, target [4]byte) bool {
	return len(frame) >= 42 && frame[12] == 0x08 && frame[13] == 0x06 &&
		frame[20] == 0 && frame[21] == 2 && bytes.Equal(frame[28:32], target[:])
}

// tail keeps the last max bytes of passt's output, for error messages.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

// lines is the kept output without passt's complaints about a missing
// syslog (it logs there too, and most hosts running it have none).
func (t *tail) lines() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keep []string
	for _, l := range strings.Split(string(t.buf), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "to syslog") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "; ")
}
