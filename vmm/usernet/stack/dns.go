package stack

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/usernet"
)

const (
	// dnsIdle ends a guest's DNS flow over TCP without queries.
	dnsIdle = 30 * time.Second
	// dnsUDPIdle ends a guest's DNS flow over UDP without queries. Short:
	// resolvers send each query from a new port, and every such flow
	// holds one of the maxUDPFlows slots while it lasts (30 s made ~4
	// lookups a second the most a guest could do).
	dnsUDPIdle = 2 * time.Second
	// dnsTimeout bounds one exchange with one upstream resolver.
	dnsTimeout = 3 * time.Second
	// dnsMaxMessage is the largest DNS message relayed (TCP framing's cap).
	dnsMaxMessage = 65535
	// dnsHeader is the size of a DNS message header.
	dnsHeader = 12
)

// serveDNSUDP answers the guest's queries on one UDP flow to the DNS
// forwarder, each in its own goroutine (bounded by maxDNSInFlight: a
// query beyond it is dropped, and the guest's resolver retries).
func (n *Network) serveDNSUDP(guest net.Conn) {
	var mu sync.Mutex // one reply written at a time
	for {
		buf := make([]byte, udpBuffer)
		guest.SetReadDeadline(time.Now().Add(dnsUDPIdle))
		k, err := guest.Read(buf)
		if err != nil {
			return
		}
		if k < dnsHeader || !acquire(n.dnsQuery) {
			continue
		}
		go func(q []byte) {
			defer release(n.dnsQuery)
			reply := n.resolve(q, "udp")
			mu.Lock()
			guest.Write(reply)
			mu.Unlock()
		}(buf[:k])
	}
}

// serveDNSTCP answers the guest's queries on one TCP connection to the DNS
// forwarder, in order (RFC 7766 allows it; the guest may open more).
func (n *Network) serveDNSTCP(guest net.Conn) {
	var hdr [2]byte
	for {
		guest.SetReadDeadline(time.Now().Add(dnsIdle))
		if _, err := io.ReadFull(guest, hdr[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(guest, q); err != nil || len(q) < dnsHeader {
			return
		}
		if !acquire(n.dnsQuery) {
			return // too many queries at once: the guest retries
		}
		reply := n.resolve(q, "tcp")
		release(n.dnsQuery)
		guest.SetWriteDeadline(time.Now().Add(dnsIdle))
		if _, err := guest.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(reply))), reply...)); err != nil {
			return
		}
	}
}

// resolve answers the guest's query q (asked over network, "udp" or
// "tcp"): under an allowlist a name not allowed is REFUSED without asking
// anyone, and an allowed one's addresses are replaced by stand-ins;
// otherwise the upstream answer is passed on. The upstream resolvers are
// asked in turn; SERVFAIL when none answers.
func (n *Network) resolve(q []byte, network string) []byte {
	ev := usernet.Event{Proto: "dns-" + network, Dst: netip.AddrPortFrom(vmm.UserAddressing.DNS, 53), Verdict: usernet.Allow, Reason: "the network's DNS forwarder"}
	name, ok := questionName(q)
	ev.Name = name
	p := n.policy.Load()
	if p.Allowlist() {
		if !ok || !p.AllowsName(name) {
			ev.Verdict, ev.Reason = usernet.Deny, "not in the allowlist (--egress-allow)"
			if p.None {
				ev.Reason = "outbound traffic is off (--egress none)"
			}
			n.events.write(ev)
			return refused(q)
		}
		ev.Reason = "allowed name"
	}
	for _, r := range n.cfg.Resolvers {
		ev.Dialed = r
		reply, err := exchange(network, r.String(), q)
		if err != nil {
			ev.Error = err.Error()
			continue
		}
		ev.Error = ""
		if p.Allowlist() {
			if reply = n.rewriteAnswer(reply, name); reply == nil {
				ev.Error = "the upstream answer could not be parsed"
				break
			}
		}
		n.events.write(ev)
		return reply
	}
	if len(n.cfg.Resolvers) == 0 {
		ev.Error = "no upstream resolver (the host's /etc/resolv.conf names none)"
	}
	n.events.write(ev)
	return servfail(q)
}

// exchange sends one query to one resolver and reads its answer.
func exchange(network, addr string, q []byte) ([]byte, error) {
	c, err := net.DialTimeout(network, addr, dnsTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(dnsTimeout))
	if network == "tcp" {
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			return nil, err
		}
		var hdr [2]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, err
		}
		reply := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(c, reply); err != nil {
			return nil, err
		}
		return checkReply(q, reply)
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, udpBuffer)
	for {
		k, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		// A datagram with another ID is not ours (a late answer, or a
		// spoofed one): keep waiting until the deadline.
		if reply, err := checkReply(q, buf[:k]); err == nil {
			return reply, nil
		}
	}
}

// checkReply accepts reply only as an answer to q (same ID, QR set).
func checkReply(q, reply []byte) ([]byte, error) {
	if len(reply) < dnsHeader || reply[0] != q[0] || reply[1] != q[1] || reply[2]&0x80 == 0 {
		return nil, errors.New("not an answer to the query")
	}
	return reply, nil
}

// servfail is a SERVFAIL answer to q: its header with QR set and RCODE 2,
// its question kept (the guest's resolver matches on it), nothing else.
func servfail(q []byte) []byte {
	r := append([]byte(nil), q...)
	r[2] = r[2]&0x01 | 0x80 // QR, keep RD
	r[3] = 0x80 | 2         // RA, SERVFAIL
	// No answer, authority or additional records; the question stays
	// (an EDNS OPT record in the additional section is dropped with them,
	// so cut the message after the question).
	binary.BigEndian.PutUint16(r[6:], 0)
	binary.BigEndian.PutUint16(r[8:], 0)
	binary.BigEndian.PutUint16(r[10:], 0)
	if end, ok := questionEnd(q); ok {
		return r[:end]
	}
	binary.BigEndian.PutUint16(r[4:], 0)
	return r[:dnsHeader]
}

// questionEnd is the offset just past q's question section.
func questionEnd(q []byte) (int, bool) {
	qd := int(binary.BigEndian.Uint16(q[4:]))
	off := dnsHeader
	for i := 0; i < qd; i++ {
		for {
			if off >= len(q) {
				return 0, false
			}
			l := int(q[off])
			if l&0xc0 != 0 { // a compression pointer ends the name
				off += 2
				break
			}
			off++
			if l == 0 {
				break
			}
			off += l
		}
		off += 4 // type, class
		if off > len(q) {
			return 0, false
		}
	}
	return off, true
}
