package stack

import (
	"encoding/binary"
	"net/netip"
	"sync"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microagent-dev/microagent/vmm/usernet"
)

// standInBase is the first stand-in address handed to the guest for an
// allowed name's real address (198.18.0.0/15, set aside for benchmarks: no
// real service is there, and a stand-in never leaves the helper).
var standInBase = netip.AddrFrom4([4]byte{198, 18, 0, 1})

// maxStandIns bounds the stand-in table: once full, the oldest stand-in
// is given to the next new address (the guest's old answer then leads
// nowhere, and a fresh lookup gets a working one).
const maxStandIns = 16384

// standIns maps the stand-in addresses handed to the guest to the allowed
// name and real address behind each. One real address for one name keeps
// its stand-in while it stays in the table, so repeated lookups do not
// use the table up.
type standIns struct {
	mu     sync.Mutex
	next   uint32 // index of the next stand-in to hand out
	byAddr map[netip.Addr]usernet.Resolved
	byReal map[usernet.Resolved]netip.Addr
}

// get is the policy's lookup.
func (s *standIns) get(a netip.Addr) (usernet.Resolved, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.byAddr[a]
	return r, ok
}

// standIn returns the stand-in for r, handing out one if needed.
func (s *standIns) standIn(r usernet.Resolved) netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAddr == nil {
		s.byAddr, s.byReal = map[netip.Addr]usernet.Resolved{}, map[usernet.Resolved]netip.Addr{}
	}
	if a, ok := s.byReal[r]; ok {
		return a
	}
	b := standInBase.As4()
	a := netip.AddrFrom4(addUint32(b, s.next%maxStandIns))
	s.next++
	if old, ok := s.byAddr[a]; ok {
		delete(s.byReal, old)
	}
	s.byAddr[a], s.byReal[r] = r, a
	return a
}

func addUint32(b [4]byte, n uint32) [4]byte {
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], binary.BigEndian.Uint32(b[:])+n)
	return out
}

// questionName is the name q asks for, and whether q is a query with
// exactly one question (anything else is refused under an allowlist).
func questionName(q []byte) (string, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return "", false
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return "", false
	}
	return qs[0].Name.String(), true
}

// refused is a REFUSED answer to q (RCODE 5), built like servfail.
func refused(q []byte) []byte {
	r := servfail(q)
	r[3] = r[3]&0xf0 | 5
	return r
}

// rewriteAnswer replaces every A record of reply with the stand-in of its
// address (recorded for name) and drops AAAA records (the guest network
// is IPv4 only, and a real IPv6 address must not reach the guest as a way
// around the stand-ins). It returns nil when reply cannot be parsed.
func (n *Network) rewriteAnswer(reply []byte, name string) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(reply)
	if err != nil {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil
	}
	answers, err := p.AllAnswers()
	if err != nil {
		return nil
	}
	// Authority and additional records are left out: glue addresses would
	// be real ones, and the guest's stub resolver needs none of them.
	h.Authoritative = false
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	if b.StartQuestions() != nil {
		return nil
	}
	for _, q := range qs {
		if b.Question(q) != nil {
			return nil
		}
	}
	if b.StartAnswers() != nil {
		return nil
	}
	for _, rr := range answers {
		var err error
		switch body := rr.Body.(type) {
		case *dnsmessage.AResource:
			a := n.names.standIn(usernet.Resolved{Name: name, Real: netip.AddrFrom4(body.A)})
			err = b.AResource(rr.Header, dnsmessage.AResource{A: a.As4()})
		case *dnsmessage.AAAAResource:
			continue
		case *dnsmessage.CNAMEResource:
			err = b.CNAMEResource(rr.Header, *body)
		default:
			continue // MX, TXT and the like carry names the policy never sees connected to
		}
		if err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}
