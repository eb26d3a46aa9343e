package stack

import (
	"bytes"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/microagent-dev/microagent/vmm/usernet"
)

// query is a DNS query for probe.test A IN with ID 0x1234 and an EDNS
// OPT record in its additional section.
var query = []byte{
	0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1,
	5, 'p', 'r', 'o', 'b', 'e', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
	0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0,
}

func TestServfail(t *testing.T) {
	r := servfail(query)
	want := append([]byte{0x12, 0x34, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0}, query[12:28]...)
	if !bytes.Equal(r, want) {
		t.Errorf("servfail:\n got % x\nwant % x", r, want)
	}
	// A question that runs past the message: header only, no question.
	bad := append([]byte(nil), query[:20]...)
	if r := servfail(bad); len(r) != dnsHeader || r[5] != 0 {
		t.Errorf("truncated query: % x", r)
	}
}

func TestCheckReply(t *testing.T) {
	reply := append([]byte(nil), query...)
	reply[2] |= 0x80
	if _, err := checkReply(query, reply); err != nil {
		t.Error(err)
	}
	reply[1] = 0x35
	if _, err := checkReply(query, reply); err == nil {
		t.Error("a reply with another ID was accepted")
	}
	if _, err := checkReply(query, query); err == nil {
		t.Error("a query (QR clear) was accepted as its own answer")
	}
}

// TestRewriteAnswer: under an allowlist the guest gets stand-in addresses
// (the same one for the same name and address), no IPv6 addresses and no
// extra records, and the stand-in leads back to the real address.
func TestRewriteAnswer(t *testing.T) {
	name := dnsmessage.MustNewName("pypi.org.")
	rh := dnsmessage.ResourceHeader{Name: name, Class: dnsmessage.ClassINET, TTL: 60}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, Response: true, Authoritative: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	b.StartAnswers()
	b.AResource(rh, dnsmessage.AResource{A: [4]byte{151, 101, 0, 223}})
	b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: [16]byte{0x20, 0x01, 0xd, 0xb8, 15: 1}})
	b.StartAdditionals()
	b.AResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("ns.pypi.org."), Class: dnsmessage.ClassINET}, dnsmessage.AResource{A: [4]byte{9, 9, 9, 9}})
	reply, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	n := &Network{}
	var seen netip.Addr
	for range 2 {
		var m dnsmessage.Message
		if err := m.Unpack(n.rewriteAnswer(reply, "pypi.org.")); err != nil {
			t.Fatal(err)
		}
		if m.ID != 7 || len(m.Answers) != 1 || len(m.Additionals) != 0 || len(m.Questions) != 1 {
			t.Fatalf("rewritten: %+v", m)
		}
		a := netip.AddrFrom4(m.Answers[0].Body.(*dnsmessage.AResource).A)
		if r, ok := n.names.get(a); !ok || r.Real != netip.MustParseAddr("151.101.0.223") || r.Name != "pypi.org." {
			t.Errorf("stand-in %s leads to %+v, %v", a, r, ok)
		}
		if seen.IsValid() && a != seen {
			t.Errorf("a second lookup got stand-in %s, the first %s", a, seen)
		}
		seen = a
	}
	if n.rewriteAnswer([]byte{1, 2, 3}, "x.") != nil {
		t.Error("a malformed answer was rewritten")
	}
}

// TestStandInsBounded: the table never holds more than maxStandIns
// addresses; the oldest stand-in is reused.
func TestStandInsBounded(t *testing.T) {
	var s standIns
	first := s.standIn(usernet.Resolved{Name: "a.", Real: netip.MustParseAddr("192.0.2.1")})
	for i := range maxStandIns {
		s.standIn(usernet.Resolved{Name: "b.", Real: netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})})
	}
	if len(s.byAddr) != maxStandIns || len(s.byReal) != maxStandIns {
		t.Errorf("%d stand-ins, %d reals", len(s.byAddr), len(s.byReal))
	}
	if r, _ := s.get(first); r.Name == "a." {
		t.Errorf("the oldest stand-in %s still leads to %+v", first, r)
	}
}
