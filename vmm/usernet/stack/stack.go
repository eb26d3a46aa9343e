// Package stack is the network helper's engine (cmd/microagent-net): a
// gVisor netstack behind the virtual network's gateway that terminates
// every guest TCP connection, UDP flow and DNS query, asks the
// usernet.Policy, and only then opens the host-side socket. Everything the
// guest can make it hold is bounded (connections, handshakes, UDP flows,
// DNS queries in flight, buffer sizes).
//
// The Ethernet side (QEMU's -netdev stream framing, ARP, the gateway's
// link endpoint) is gvisor-tap-vsock's tap package; the forwarders are ours
// because gvisor-tap-vsock's dial every destination without asking.
package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containers/gvisor-tap-vsock/pkg/tap"
	"github.com/containers/gvisor-tap-vsock/pkg/types"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/usernet"
	"github.com/microagent-dev/microagent/vmm/usernet/intercept"
)

// Bounds on what the guest can make the helper hold.
const (
	// maxConns bounds open guest TCP connections through the network
	// (DNS over TCP included); one more is reset.
	maxConns = 512
	// maxHandshakes bounds guest TCP handshakes being decided and dialed
	// at once (gVisor drops further SYNs, which the guest retries).
	maxHandshakes = 64
	// maxUDPFlows bounds open UDP flows (DNS included); a new flow beyond
	// it is dropped until one ends.
	maxUDPFlows = 128
	// maxDNSInFlight bounds DNS queries waiting for an upstream answer.
	maxDNSInFlight = 64
	// maxPublishedConns bounds connections through published ports.
	maxPublishedConns = 256
	// udpBuffer is the largest UDP datagram relayed (larger ones are cut).
	udpBuffer = 16 << 10
	// udpIdle ends a UDP flow without traffic in either direction.
	udpIdle = 60 * time.Second
	// dialTimeout bounds a host-side TCP dial (and a published port's
	// dial into the guest).
	dialTimeout = 10 * time.Second
	// mtu is the guest NIC's (Linux's default for virtio-net).
	mtu = 1500
	// nic is the stack's one NIC.
	nic = 1
)

// Network is one guest's virtual network.
type Network struct {
	cfg usernet.Config // its Policy is only the first: see policy
	// policy is the one in force (SetPolicy replaces it while flows run).
	policy atomic.Pointer[usernet.Policy]
	stack  *stack.Stack
	sw     *tap.Switch
	events *eventLog
	hosts  hostAddrs
	names  standIns // allowed names' stand-in addresses (allowlist only)

	udpDenials denials // refused UDP destinations logged lately

	conns     chan struct{} // semaphore: maxConns
	udpFlows  chan struct{} // semaphore: maxUDPFlows
	dnsQuery  chan struct{} // semaphore: maxDNSInFlight
	published chan struct{} // semaphore: maxPublishedConns

	swap *intercept.Interceptor // nil: no secret swap

	// dial opens host-side connections; tests replace it.
	dial func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error)
}

// New builds the network for cfg; decisions are written to events as JSON
// lines (usernet.Event) to eventsTo. src resolves the secret swap's values (needed
// when cfg.Swap is set, else unused).
func New(cfg usernet.Config, eventsTo io.Writer, src intercept.Source) (*Network, error) {
	events := &eventLog{enc: json.NewEncoder(eventsTo)}
	swap, err := newSwap(cfg.Swap, src, events)
	if err != nil {
		return nil, err
	}
	a := vmm.UserAddressing
	ep, err := tap.NewLinkEndpoint(false, mtu, usernet.GatewayMAC.String(), a.Gateway.String(), []string{a.DNS.String()})
	if err != nil {
		return nil, fmt.Errorf("link endpoint: %w", err)
	}
	sw := tap.NewSwitch(false)
	ep.Connect(sw)
	sw.Connect(ep)

	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	if err := s.CreateNIC(nic, ep); err != nil {
		return nil, fmt.Errorf("NIC: %s", err)
	}
	// The gateway and the DNS forwarder answer ARP; no other address of
	// the virtual network does, so the guest reaches nothing else there.
	for _, addr := range []netip.Addr{a.Gateway, a.DNS} {
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFrom4(addr.As4()).WithPrefix()}
		if err := s.AddProtocolAddress(nic, pa, stack.AddressProperties{}); err != nil {
			return nil, fmt.Errorf("address %s: %s", addr, err)
		}
	}
	// Spoofing and promiscuous mode let the stack accept connections to
	// any destination (it stands for the whole outside) and answer from it.
	s.SetSpoofing(nic, true)
	s.SetPromiscuousMode(nic, true)
	subnet, err := tcpip.NewSubnet(tcpip.AddrFrom4(a.Prefix.Addr().As4()), tcpip.MaskFromBytes(net.CIDRMask(a.Prefix.Bits(), 32)))
	if err != nil {
		return nil, fmt.Errorf("subnet: %w", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: subnet, NIC: nic}})

	n := &Network{
		cfg: cfg, stack: s, sw: sw, events: events, swap: swap,
		conns:     make(chan struct{}, maxConns),
		udpFlows:  make(chan struct{}, maxUDPFlows),
		dnsQuery:  make(chan struct{}, maxDNSInFlight),
		published: make(chan struct{}, maxPublishedConns),
		dial: func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			return d.DialContext(ctx, network, addr.String())
		},
	}
	first := cfg.Policy
	n.policy.Store(&first)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(s, 0, maxHandshakes, n.tcpFlow).HandlePacket)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(s, n.udpFlow).HandlePacket)
	return n, nil
}

// SetPolicy puts p in force for every flow and DNS query decided from now
// on; flows already open stay open (their host side is connected). The
// change is logged as an event of proto "policy".
func (n *Network) SetPolicy(p usernet.Policy) {
	n.policy.Store(&p)
	n.events.write(usernet.Event{Proto: usernet.PolicyProto, Verdict: usernet.Allow, Reason: "policy changed: " + p.String()})
}

// Serve relays frames with the VMM over conn (QEMU's stream framing) and
// serves the published ports on listeners (one per cfg.GuestPorts entry)
// until the VMM closes conn or ctx ends.
func (n *Network) Serve(ctx context.Context, conn net.Conn, listeners []net.Listener) error {
	if len(listeners) != len(n.cfg.GuestPorts) {
		return fmt.Errorf("%d published-port listeners for %d guest ports", len(listeners), len(n.cfg.GuestPorts))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, l := range listeners {
		go n.publish(ctx, l, n.cfg.GuestPorts[i])
	}
	go func() {
		<-ctx.Done()
		conn.Close()
		for _, l := range listeners {
			l.Close()
		}
	}()
	err := n.sw.Accept(ctx, conn, types.QemuProtocol)
	if errors.Is(err, io.EOF) || ctx.Err() != nil {
		return nil // the VMM closed its end: the VM is gone
	}
	return err
}

// tcpFlow decides a guest TCP connection: refused ones are reset before
// anything is dialed; allowed ones are dialed first, so a destination
// that refuses refuses the guest too, then accepted and relayed.
func (n *Network) tcpFlow(r *tcp.ForwarderRequest) {
	d, ev := n.decide("tcp", r.ID(), n.conns, fmt.Sprintf("too many open connections (%d)", maxConns))
	if ev.Verdict == usernet.Deny {
		n.events.write(ev)
		r.Complete(true)
		return
	}
	defer release(n.conns)

	var upstream net.Conn
	if !d.Resolver {
		// The resolver's connections are not logged: its queries are.
		ev.Dialed = d.Dial
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		var err error
		upstream, err = n.dial(ctx, "tcp", d.Dial)
		cancel()
		if err != nil {
			ev.Error = err.Error()
			n.events.write(ev)
			r.Complete(true)
			return
		}
		defer upstream.Close()
		n.events.write(ev)
	}
	var wq waiter.Queue
	ep, tcpErr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if tcpErr != nil {
		return // the guest gave up on the handshake
	}
	guest := gonet.NewTCPConn(&wq, ep)
	defer guest.Close()
	if d.Resolver {
		n.serveDNSTCP(guest)
		return
	}
	start := time.Now()
	var out, in int64
	// With the swap on, flows to the web's ports are looked at, and so are
	// flows on any port to a name the swap covers (reached through its
	// stand-in: HTTPS on 8443, say).
	if n.swap != nil && (d.Dial.Port() == 443 || d.Dial.Port() == 80 || (d.Name != "" && n.swap.Covers(d.Name))) {
		var ok bool
		if out, in, ok = n.relaySwap(guest, upstream, d, ev); !ok {
			return
		}
	} else if d.Name != "" {
		var ok bool
		if out, in, ok = n.relayNamed(guest, upstream, ev); !ok {
			return
		}
	} else {
		out, in = relay(guest, upstream)
	}
	n.closed(ev, start, out, in)
}

// closed logs the end of an allowed flow: what it carried each way and
// for how long.
func (n *Network) closed(ev usernet.Event, start time.Time, out, in int64) {
	ev.Closed, ev.BytesOut, ev.BytesIn = true, out, in
	ev.Seconds = time.Since(start).Round(time.Millisecond).Seconds()
	n.events.write(ev)
}

// relayNamed relays a flow the guest opened through an allowed name's
// stand-in, holding back what the guest sends until its first bytes show
// the name they address (a TLS server name, an HTTP Host): a name that is
// not allowed ends the flow, so an allowed name's server (a CDN) cannot
// be asked for another site (domain fronting). What the server sends
// first goes to the guest meanwhile (protocols where the server speaks
// first work).
// It returns the bytes each way and false when the flow was denied.
func (n *Network) relayNamed(guest, upstream net.Conn, ev usernet.Event) (out, in int64, ok bool) {
	var wg sync.WaitGroup
	wg.Add(1)
	var fromUpstream int64
	go func() { defer wg.Done(); fromUpstream = pipe(guest, upstream) }()
	head, name, err := peekName(guest)
	if why := n.nameRefused(name, err); why != "" {
		ev.Verdict, ev.Reason, ev.Name = usernet.Deny, why, name
		n.events.write(ev)
		guest.Close()
		upstream.Close()
		wg.Wait()
		return 0, 0, false
	}
	out = int64(len(head))
	if _, err := upstream.Write(head); err != nil {
		upstream.Close()
	} else {
		out += pipe(upstream, guest)
	}
	wg.Wait()
	return out, fromUpstream, true
}

// nameRefused says why a flow through an allowed name's stand-in whose
// first bytes address name (err: they could not be read as any) is ended,
// or "" when it goes on.
func (n *Network) nameRefused(name string, err error) string {
	switch {
	case err != nil:
		return "cannot tell which name it addresses: " + err.Error()
	case name != "" && !n.policy.Load().AllowsName(name):
		return fmt.Sprintf("it addresses %s, which is not in the allowlist (a TLS server name or HTTP Host must be allowed too)", name)
	}
	return ""
}

// peekName reads the guest's first bytes until the name they address is
// known (empty when they carry none) or maxPeek is held.
func peekName(guest net.Conn) ([]byte, string, error) {
	return peekFrom(guest, make([]byte, maxPeek), 0)
}

// peekFrom is peekName going on from the first held bytes of buf
// (maxPeek long).
func peekFrom(guest net.Conn, buf []byte, held int) ([]byte, string, error) {
	var err error
	for {
		if held > 0 || err != nil {
			name, nerr := nameIn(buf[:held])
			switch {
			case nerr == nil:
				return buf[:held], name, nil
			case errors.Is(nerr, errNoName):
				return buf[:held], "", nil
			case !errors.Is(nerr, errNeedMore):
				return buf[:held], "", nerr
			case held == maxPeek:
				return buf[:held], "", fmt.Errorf("no name within its first %d bytes", maxPeek)
			case err != nil:
				// The guest stopped sending before a name was complete:
				// nothing it sent named anything.
				return buf[:held], "", nil
			}
		}
		var k int
		k, err = guest.Read(buf[held:])
		held += k
	}
}

// decide asks the policy about a guest flow and, when it is allowed, takes
// a slot of sem (the flow is denied with why when sem is full). The event
// is the decision as logged.
func (n *Network) decide(proto string, id stack.TransportEndpointID, sem chan struct{}, full string) (usernet.Decision, usernet.Event) {
	dst := netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort)
	p := n.policy.Load()
	var resolved func(netip.Addr) (usernet.Resolved, bool)
	if p.Allowlist() {
		resolved = n.names.get
	}
	d := p.Decide(dst, n.hosts.get(), resolved)
	ev := usernet.Event{Proto: proto, Dst: dst, Verdict: d.Verdict, Reason: d.Reason}
	if d.Allowed() && !acquire(sem) {
		ev.Verdict, ev.Reason = usernet.Deny, full
	}
	return d, ev
}

// udpFlow decides the first datagram of a guest UDP flow. Refused
// datagrams are dropped (every one: UDP has no connection to refuse), and
// logged once a second per destination; an allowed flow gets its own
// host socket and lives until udpIdle passes without traffic.
func (n *Network) udpFlow(r *udp.ForwarderRequest) {
	d, ev := n.decide("udp", r.ID(), n.udpFlows, fmt.Sprintf("too many UDP flows (%d)", maxUDPFlows))
	if ev.Verdict == usernet.Deny {
		if n.udpDenials.fresh(ev.Dst) {
			n.events.write(ev)
		}
		return
	}
	// This runs in the stack's receive path: the dial below is a UDP
	// socket's connect, which does not block.
	var upstream net.Conn
	if !d.Resolver {
		ev.Dialed = d.Dial
		var err error
		if upstream, err = n.dial(context.Background(), "udp", d.Dial); err != nil {
			ev.Error = err.Error()
			n.events.write(ev)
			release(n.udpFlows)
			return
		}
	}
	var wq waiter.Queue
	ep, tcpErr := r.CreateEndpoint(&wq)
	if tcpErr != nil {
		ev.Error = tcpErr.String()
		n.events.write(ev)
		release(n.udpFlows)
		if upstream != nil {
			upstream.Close()
		}
		return
	}
	if !d.Resolver { // its queries are logged instead
		n.events.write(ev)
	}
	guest := gonet.NewUDPConn(&wq, ep)
	go func() {
		defer release(n.udpFlows)
		defer guest.Close()
		if d.Resolver {
			n.serveDNSUDP(guest)
			return
		}
		defer upstream.Close()
		start := time.Now()
		out, in := relayUDP(guest, upstream)
		n.closed(ev, start, out, in)
	}()
}

// publish serves one published port: each host connection is dialed into
// the guest's port from the gateway's address.
func (n *Network) publish(ctx context.Context, l net.Listener, guestPort int) {
	guest := tcpip.FullAddress{NIC: nic, Addr: tcpip.AddrFrom4(vmm.UserAddressing.Guest.As4()), Port: uint16(guestPort)}
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: wait instead of spinning.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if !acquire(n.published) {
			c.Close()
			continue
		}
		go func() {
			defer release(n.published)
			defer c.Close()
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			g, err := gonet.DialContextTCP(dctx, n.stack, guest, ipv4.ProtocolNumber)
			cancel()
			if err != nil {
				return // nothing listens in the guest yet: the host sees the close
			}
			defer g.Close()
			relay(c, g)
		}()
	}
}

// relay copies both ways until both directions end, passing half-closes
// on, and returns the bytes read from a and from b.
func relay(a, b net.Conn) (fromA, fromB int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); fromB = pipe(a, b) }()
	fromA = pipe(b, a)
	wg.Wait()
	return fromA, fromB
}

// pipe copies src to dst until src ends, then half-closes dst, and
// returns the bytes copied.
func pipe(dst, src net.Conn) int64 {
	n, _ := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	return n
}

// relayUDP copies datagrams both ways until udpIdle passes without any,
// and returns the bytes the guest sent and received.
func relayUDP(guest, host net.Conn) (out, in int64) {
	var mu sync.Mutex
	last := time.Now()
	touch := func() { mu.Lock(); last = time.Now(); mu.Unlock() }
	idle := func() bool { mu.Lock(); defer mu.Unlock(); return time.Since(last) >= udpIdle }
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn, count *int64) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, udpBuffer)
		for {
			src.SetReadDeadline(time.Now().Add(udpIdle))
			k, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && !idle() {
					continue // the other direction is busy
				}
				return
			}
			touch()
			dst.Write(buf[:k])
			*count += int64(k) // each counter is written by one goroutine, read after both ended
		}
	}
	go cp(host, guest, &out)
	go cp(guest, host, &in)
	<-done
	// Unblock the other direction.
	guest.Close()
	host.Close()
	<-done
	return out, in
}

// acquire takes a slot of sem without waiting.
func acquire(sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
		return false
	}
}

func release(sem chan struct{}) { <-sem }

// addrOf converts a netstack address.
func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

// eventLog writes decisions as JSON lines.
type eventLog struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (l *eventLog) write(ev usernet.Event) {
	ev.Time = time.Now().UTC()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.enc.Encode(ev)
}

// denials remembers the refused UDP destinations logged in the last
// second: a guest resending to a closed address must not turn every
// datagram into a log line.
type denials struct {
	mu   sync.Mutex
	seen map[netip.AddrPort]time.Time
}

// maxDenials bounds denials' memory; when full it starts afresh (at worst
// some refusals are logged twice).
const maxDenials = 1024

// fresh reports whether a refusal for dst should be logged now.
func (d *denials) fresh(dst netip.AddrPort) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	if t, ok := d.seen[dst]; ok && now.Sub(t) < time.Second {
		return false
	}
	if d.seen == nil || len(d.seen) >= maxDenials {
		d.seen = map[netip.AddrPort]time.Time{}
	}
	d.seen[dst] = now
	return true
}

// hostAddrs caches the host's own addresses, which the policy closes.
// They are read again when older than hostAddrsTTL (a host's addresses
// change with DHCP and VPNs).
type hostAddrs struct {
	mu    sync.Mutex
	addrs []netip.Addr
	read  time.Time
}

const hostAddrsTTL = 5 * time.Second

func (h *hostAddrs) get() []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.read) < hostAddrsTTL {
		return h.addrs
	}
	ifs, err := net.InterfaceAddrs()
	if err != nil {
		return h.addrs // keep the last known ones
	}
	// A new slice: callers keep reading the one returned before.
	h.addrs = nil
	for _, ia := range ifs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			h.addrs = append(h.addrs, p.Addr().Unmap())
		}
	}
	h.read = time.Now()
	return h.addrs
}
