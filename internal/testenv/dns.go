package testenv

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer is a tiny real DNS server a test runs on the host for a
// guest's resolver.
type DNSServer struct {
	// Queries counts the queries answered.
	Queries atomic.Int64
}

// StartDNS answers A queries for name (fully qualified, with the final
// dot) with addr and NXDOMAIN for the rest, on host:53 over UDP (a guest's
// resolver cannot use another port). It skips the test when the port
// cannot be bound, or fails it under CI.
func StartDNS(t testing.TB, host netip.Addr, name string, addr netip.Addr) *DNSServer {
	t.Helper()
	pc, err := net.ListenPacket("udp4", netip.AddrPortFrom(host, 53).String())
	if err != nil {
		SkipOrFail(t, "DNS test server needs %s:53 (root, port free): %v", host, err)
	}
	s := &DNSServer{}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp, _, err := AnswerDNS(buf[:n], name, addr); err == nil {
				s.Queries.Add(1)
				pc.WriteTo(resp, from)
			}
		}
	}()
	return s
}

// AnswerDNS answers the DNS query req as a test's server does: A queries
// for name (fully qualified; empty: every name) with addr, NXDOMAIN for
// other names. It returns the response and the name asked for.
func AnswerDNS(req []byte, name string, addr netip.Addr) (resp []byte, asked string, err error) {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil {
		return nil, "", err
	}
	q, err := p.Question()
	if err != nil {
		return nil, "", err
	}
	asked = q.Name.String()
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	known := name == "" || strings.EqualFold(asked, name)
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	if err := b.StartQuestions(); err != nil {
		return nil, asked, err
	}
	if err := b.Question(q); err != nil {
		return nil, asked, err
	}
	if known && q.Type == dnsmessage.TypeA {
		if err := b.StartAnswers(); err != nil {
			return nil, asked, err
		}
		if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
			dnsmessage.AResource{A: addr.As4()}); err != nil {
			return nil, asked, err
		}
	}
	resp, err = b.Finish()
	return resp, asked, err
}

// LoopbackDNS is a DNS server on 127.0.0.1 (UDP and TCP, one port) that
// answers one name (every name for "") with one address.
type LoopbackDNS struct {
	// Addr is where it listens, for UDP and TCP.
	Addr netip.AddrPort
	// UDP and TCP count the queries answered over each.
	UDP, TCP atomic.Int32

	mu    sync.Mutex
	asked []string
}

// Names lists the names the server was asked for.
func (s *LoopbackDNS) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

// StartLoopbackDNS serves DNS on a free port of 127.0.0.1 (UDP and TCP)
// until the test ends, answering as AnswerDNS does: a network whose
// forwarder asks it resolves the test's names without any other resolver
// being asked.
func StartLoopbackDNS(t testing.TB, name string, ip netip.Addr) *LoopbackDNS {
	t.Helper()
	tl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	s := &LoopbackDNS{Addr: tl.Addr().(*net.TCPAddr).AddrPort()}
	pc, err := net.ListenPacket("udp4", s.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	answer := func(req []byte) []byte {
		resp, asked, err := AnswerDNS(req, name, ip)
		if asked != "" {
			s.mu.Lock()
			s.asked = append(s.asked, asked)
			s.mu.Unlock()
		}
		if err != nil {
			return nil
		}
		return resp
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := answer(buf[:n]); resp != nil {
				s.UDP.Add(1)
				pc.WriteTo(resp, from)
			}
		}
	}()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var hdr [2]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				req := make([]byte, binary.BigEndian.Uint16(hdr[:]))
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				if resp := answer(req); resp != nil {
					s.TCP.Add(1)
					c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...))
				}
			}()
		}
	}()
	return s
}
