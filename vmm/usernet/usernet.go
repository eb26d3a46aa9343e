// Package usernet runs microagent's own user-mode network: one helper
// process per VM (cmd/microagent-net, built on gVisor's netstack in
// vmm/usernet/stack) that terminates every guest TCP connection, UDP flow
// and DNS query and opens the host-side socket itself, after its Policy
// allowed it. This package is the host side: it finds and starts the
// helper, hands it the VMM's socket pair and the published ports'
// listeners, waits for it to be ready and relays its decision log.
//
// Why a separate binary and not the supervisor or a re-executed
// microagent: the helper parses everything a hostile guest sends, so it
// runs as its own process (never inside the supervisor, which holds
// secrets), as nobody when started by root, with no file system access it
// needs (every socket and listener arrives as a descriptor), and as a
// small static program: less code reachable from the guest, a smaller RSS
// per VM, and no secret-handling code mapped at all.
//
// The helper's descriptors: 0 its configuration (one line of JSON Config),
// then, while it runs, one line of JSON Policy per policy change (each put
// in force and acknowledged by an Event of PolicyProto), 1 a pipe on which
// it writes "ready" once serving and then one JSON Event per decision, 2
// its errors, 3 its end of the socket pair with the VMM (QEMU's -netdev
// stream framing), 4... the published ports' listening sockets in
// Config.GuestPorts order, and after them, with Config.Swap, its end of
// the value socket (values.go). It exits 0 when the VMM closes its end.
package usernet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/internal/netproc"
	"github.com/microagent-dev/microagent/vmm/usernet/intercept"
)

// BinaryName is the helper's file name, installed by make build beside
// microagent and the guest agent.
const BinaryName = "microagent-net"

// EnvVar overrides where the helper is found.
const EnvVar = "MICROAGENT_NET"

// agentEnvVar is where the guest agent is found (runner.AgentEnvVar): make
// build puts the helper beside it, so a program that is given the agent's
// path (the test binaries) finds the helper too.
const agentEnvVar = "MICROAGENT_AGENT"

// ReadyTimeout bounds the wait for the helper's ready line.
const ReadyTimeout = 10 * time.Second

// ReadyLine is what the helper writes first once it serves the network.
const ReadyLine = "ready"

// GuestMAC is the guest NIC's MAC address (QEMU's default for the first
// NIC), given to the VMM.
var GuestMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// GatewayMAC is the helper's MAC address on the virtual network.
var GatewayMAC = net.HardwareAddr{0x52, 0x55, 0x0a, 0x00, 0x02, 0x02}

// nobody is the user and group the helper runs as when started by root.
const nobody = 65534

// DropRoot is the helper's first step: started by root it becomes nobody
// (no supplementary groups, no new privileges) and checks that it did, so
// a guest's traffic is never handled with root's rights. Every socket it
// needs is passed in, so it needs nothing of root.
func DropRoot() error {
	if os.Geteuid() != 0 {
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	// The syscall package's Set* apply to every thread of the process.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("drop groups: %w", err)
	}
	if err := syscall.Setgid(nobody); err != nil {
		return fmt.Errorf("become group nobody: %w", err)
	}
	if err := syscall.Setuid(nobody); err != nil {
		return fmt.Errorf("become nobody: %w", err)
	}
	if os.Geteuid() != nobody || os.Getegid() != nobody {
		return fmt.Errorf("still uid %d gid %d after dropping root", os.Geteuid(), os.Getegid())
	}
	return nil
}

// Config is what the helper is told on its standard input.
type Config struct {
	// Policy decides which guest flows are opened.
	Policy Policy `json:"policy"`
	// GuestPorts are the guest TCP ports of the published ports, one per
	// listening socket passed from descriptor 4 on.
	GuestPorts []int `json:"guest_ports,omitempty"`
	// Resolvers are the upstream DNS servers that the network's DNS
	// forwarder (vmm.UserAddressing.DNS) relays to, tried in order.
	Resolvers []netip.AddrPort `json:"resolvers,omitempty"`
	// Swap, when set, terminates the guest's TLS toward the hosts its
	// rules cover and swaps placeholders for values (package intercept).
	Swap *SwapConfig `json:"swap,omitempty"`
}

// SwapConfig is the secret swap's part of the helper's configuration. It
// holds no value and no reference: values come per request from a
// Source the helper is given apart.
type SwapConfig struct {
	// Rules are the placeholders, their names and hosts.
	Rules []intercept.Rule `json:"rules"`
	// CACert and CAKey are the workspace CA (intercept.NewCA's PEM).
	CACert []byte `json:"ca_cert"`
	CAKey  []byte `json:"ca_key"`
	// ExtraRoots are PEM CA certificates trusted for the real hosts
	// besides the system's (--egress-ca-file).
	ExtraRoots []byte `json:"extra_roots,omitempty"`
}

// Event is one line of the helper's decision log.
type Event struct {
	Time time.Time `json:"time"`
	// Proto is "tcp", "udp", "dns-udp", "dns-tcp" or PolicyProto.
	Proto string `json:"proto"`
	// Dst is the guest's destination.
	Dst netip.AddrPort `json:"dst"`
	// Name is the name a DNS query asked for.
	Name string `json:"name,omitempty"`
	// Verdict is Allow or Deny; Reason says why.
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	// Dialed is the host-side address the helper dialed (only after an
	// Allow; invalid when nothing was dialed).
	Dialed netip.AddrPort `json:"dialed,omitzero"`
	// Error is why an allowed flow failed on the host side.
	Error string `json:"error,omitempty"`
	// Closed marks the end of an allowed flow (a second event after the
	// one that allowed it); BytesOut (guest to host), BytesIn and Seconds
	// say what it carried and for how long.
	Closed   bool    `json:"closed,omitempty"`
	BytesOut int64   `json:"bytes_out,omitempty"`
	BytesIn  int64   `json:"bytes_in,omitempty"`
	Seconds  float64 `json:"seconds,omitempty"`
	// Swap is a placeholder seen on an intercepted or plain http flow:
	// a swap for the audit, or a flag (Reason says which in words).
	Swap *intercept.Event `json:"swap,omitempty"`
}

// PolicyProto is the Proto of the event that records a policy change (its
// Reason describes the policy now in force).
const PolicyProto = "policy"

// PolicyAckTimeout bounds the wait for the helper to confirm a change.
const PolicyAckTimeout = 5 * time.Second

// FindHelper resolves the helper binary: binary when given, else
// $MICROAGENT_NET, else microagent-net beside the running executable,
// else beside the guest agent named by $MICROAGENT_AGENT.
func FindHelper(binary string) (string, error) {
	if binary == "" {
		binary = os.Getenv(EnvVar)
	}
	if binary != "" {
		if _, err := os.Stat(binary); err != nil {
			return "", fmt.Errorf("network helper %s: %w", binary, err)
		}
		return binary, nil
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		tried = append(tried, filepath.Join(filepath.Dir(exe), BinaryName))
	}
	if agent := os.Getenv(agentEnvVar); agent != "" {
		tried = append(tried, filepath.Join(filepath.Dir(agent), BinaryName))
	}
	for _, p := range tried {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("network helper %s not found (looked at %s): build it with \"make build\" (or set %s)",
		BinaryName, strings.Join(tried, ", "), EnvVar)
}

// HostResolvers returns the nameservers of the host's /etc/resolv.conf
// (port 53), the default upstream of the network's DNS forwarder.
func HostResolvers() []netip.AddrPort {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a.WithZone(""), 53))
			}
		}
	}
	return out
}

// StartConfig describes one helper to start.
type StartConfig struct {
	// Binary is the helper (empty: FindHelper's lookup).
	Binary string
	// Network is the guest's network (user mode).
	Network *vmm.Network
	// Resolvers are the DNS forwarder's upstreams (empty: HostResolvers).
	Resolvers []netip.AddrPort
	// Log receives the helper's decisions, one JSON Event per line (nil:
	// they are dropped).
	Log io.Writer
	// DieWithParent sends the helper SIGKILL when the calling process dies.
	DieWithParent bool
}

// Process is a running helper.
type Process struct {
	*netproc.Process
	stderr *headBuffer
	events io.ReadCloser
	logged chan struct{} // closed once the decision log is drained

	updates   sync.Mutex     // one policy change at a time
	policyIn  io.WriteCloser // the helper's standard input
	policyAck chan struct{}  // a policy event was read (cap 1)
}

// UpdatePolicy puts p in force in the running helper and returns once the
// helper confirmed it (an event of PolicyProto in its log): flows and DNS
// queries decided from then on follow p, flows already open stay open.
// An error means the change may or may not be in force.
func (p *Process) UpdatePolicy(ctx context.Context, pol Policy) error {
	line, err := json.Marshal(pol)
	if err != nil {
		return fmt.Errorf("network helper: policy: %w", err)
	}
	p.updates.Lock()
	defer p.updates.Unlock()
	select { // an acknowledgement nobody waited for (none is expected)
	case <-p.policyAck:
	default:
	}
	if _, err := p.policyIn.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("network helper: sending the policy: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, PolicyAckTimeout)
	defer cancel()
	select {
	case <-p.policyAck:
		return nil
	case <-p.Done():
		return errors.New("network helper: it exited before it confirmed the policy change")
	case <-ctx.Done():
		return fmt.Errorf("network helper: no confirmation of the policy change: %w", ctx.Err())
	}
}

// Start binds the published ports, runs the helper and waits for its ready
// line. It returns the VMM's end of the socket pair, which the caller hands
// to the VMM and then closes; the helper exits once the VMM's copy closes.
func Start(cfg StartConfig) (*Process, *os.File, error) {
	if cfg.Network.Isolated() {
		return nil, nil, errors.New("network helper: the isolated network has no NIC to serve")
	}
	bin, err := FindHelper(cfg.Binary)
	if err != nil {
		return nil, nil, err
	}
	conf := Config{Policy: PolicyOf(cfg.Network), Resolvers: cfg.Resolvers}
	if len(conf.Resolvers) == 0 {
		conf.Resolvers = HostResolvers()
	}
	// Published ports are bound here, not in the helper: a port that is
	// taken fails the start with a plain message, and the helper needs
	// neither privileges nor a say in which host addresses it listens on.
	var listeners []*os.File
	defer func() {
		for _, f := range listeners {
			f.Close()
		}
	}()
	for _, fw := range cfg.Network.Forwards {
		l, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(fw.HostIP, uint16(fw.HostPort))))
		if err != nil {
			return nil, nil, fmt.Errorf("publish %s: %w: stop what uses host port %d or publish another one", fw, err, fw.HostPort)
		}
		f, err := l.File()
		l.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("publish %s: %w", fw, err)
		}
		listeners = append(listeners, f)
		conf.GuestPorts = append(conf.GuestPorts, fw.GuestPort)
	}
	var values *os.File // the helper's end of the value socket (swap only)
	if sw := cfg.Network.Swap; sw != nil {
		if sw.Source == nil {
			return nil, nil, errors.New("network helper: a secret swap without a source of values")
		}
		conf.Swap = &SwapConfig{CACert: sw.CACert, CAKey: sw.CAKey, ExtraRoots: sw.ExtraRoots}
		for _, r := range sw.Rules {
			conf.Swap.Rules = append(conf.Swap.Rules, intercept.Rule{Name: r.Name, Placeholder: r.Placeholder, Hosts: r.Hosts})
		}
		ours, theirs, err := netproc.SocketPair("usernet-values")
		if err != nil {
			return nil, nil, fmt.Errorf("network helper: %w", err)
		}
		defer theirs.Close()
		c, err := net.FileConn(ours)
		ours.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("network helper: value socket: %w", err)
		}
		// Served until the helper closes its end (it exits with the VM).
		go serveValues(c, sw.Source, sw.Rules)
		values = theirs
	}
	confJSON, err := json.Marshal(conf)
	if err != nil {
		return nil, nil, fmt.Errorf("network helper: configuration: %w", err)
	}

	ours, theirs, err := netproc.SocketPair("usernet")
	if err != nil {
		return nil, nil, fmt.Errorf("network helper: %w", err)
	}
	defer theirs.Close() // the helper has its own copy once started

	cmd := exec.Command(bin)
	cmd.Env = vmm.ChildEnv() // nothing of the caller's: no backend token, no secret value
	cmd.ExtraFiles = append([]*os.File{theirs}, listeners...)
	if values != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, values)
	}
	p := &Process{stderr: &headBuffer{max: 4 << 10}, logged: make(chan struct{}), policyAck: make(chan struct{}, 1)}
	cmd.Stderr = p.stderr
	if p.events, err = cmd.StdoutPipe(); err != nil {
		ours.Close()
		return nil, nil, fmt.Errorf("network helper: %w", err)
	}
	// Standard input stays open for policy changes, after the
	// configuration line.
	if p.policyIn, err = cmd.StdinPipe(); err != nil {
		ours.Close()
		return nil, nil, fmt.Errorf("network helper: %w", err)
	}
	attr := &syscall.SysProcAttr{Setsid: !cfg.DieWithParent}
	if cfg.DieWithParent {
		attr.Pdeathsig = syscall.SIGKILL
	}
	// Started by root, the helper drops to nobody itself before it reads a
	// byte (DropRoot): exec'ing it as nobody would need every folder on
	// its path searchable by others, which a checkout under /root is not.
	cmd.SysProcAttr = attr
	// The decision log is drained before the helper is reaped (Wait closes
	// the pipe); a failed exit comes with what it said.
	drain := func() { <-p.logged }
	describe := func(err error) error {
		err = fmt.Errorf("network helper (pid %d) exited: %v", cmd.Process.Pid, err)
		if s := p.stderr.String(); s != "" {
			err = fmt.Errorf("%w: %s", err, s)
		}
		return err
	}
	if p.Process, err = netproc.Start("network helper", cmd, cfg.DieWithParent, drain, describe); err != nil {
		ours.Close()
		return nil, nil, fmt.Errorf("network helper: starting %s: %w", bin, err)
	}
	line := append(confJSON, '\n')
	_, err = p.policyIn.Write(line)
	clear(line) // it holds the swap's CA key
	clear(confJSON)
	if err != nil {
		ours.Close()
		p.Kill()
		return nil, nil, fmt.Errorf("network helper: sending the configuration: %w", err)
	}
	if err := p.awaitReady(cfg.Log); err != nil {
		ours.Close()
		p.Kill()
		msg := fmt.Sprintf("network helper %s (pid %d) did not come up: %v", bin, p.PID(), err)
		if s := p.stderr.String(); s != "" {
			msg += ": " + s
		}
		return nil, nil, errors.New(msg)
	}
	return p, ours, nil
}

// awaitReady reads the ready line (bounded by ReadyTimeout), then relays
// the decision log to log in the background until the helper exits.
func (p *Process) awaitReady(log io.Writer) error {
	lines := bufio.NewScanner(p.events)
	// An Event is a few hundred bytes; a longer line is the helper's
	// fault and ends the relay rather than growing memory.
	lines.Buffer(make([]byte, 0, 4<<10), 16<<10)
	ready := make(chan bool, 1)
	go func() {
		defer close(p.logged)
		ok := lines.Scan() && lines.Text() == ReadyLine
		ready <- ok
		if !ok {
			io.Copy(io.Discard, p.events)
			return
		}
		for lines.Scan() {
			if log != nil {
				log.Write(append(lines.Bytes(), '\n'))
			}
			if p.isPolicyEvent(lines.Bytes()) {
				select {
				case p.policyAck <- struct{}{}:
				default:
				}
			}
		}
		io.Copy(io.Discard, p.events)
	}()
	select {
	case ok := <-ready:
		if !ok {
			// It closed its output: wait (bounded) for its exit and message.
			select {
			case <-p.Done():
			case <-time.After(time.Second):
			}
			return errors.New("it exited before it was ready")
		}
		return nil
	case <-time.After(ReadyTimeout):
		return fmt.Errorf("no ready line within %v", ReadyTimeout)
	}
}

// isPolicyEvent reports whether line is the helper's record of a policy
// change. Names the guest chose are JSON strings in the line, so their
// quotes are escaped and cannot form the key and value matched first.
func (p *Process) isPolicyEvent(line []byte) bool {
	if !bytes.Contains(line, []byte(`"proto":"`+PolicyProto+`"`)) {
		return false
	}
	var ev Event
	return json.Unmarshal(line, &ev) == nil && ev.Proto == PolicyProto
}

// headBuffer keeps the first max bytes written to it: the helper writes
// to stderr only when it fails, and its first words say why.
type headBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// Write implements io.Writer; it drops what exceeds max and never fails.
func (h *headBuffer) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.max - len(h.buf); room > 0 {
		h.buf = append(h.buf, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

// String is the kept output on one line.
func (h *headBuffer) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(strings.Fields(string(h.buf)), " ")
}
