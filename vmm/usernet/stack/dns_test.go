package stack

import (
	"bytes"
	"testing"
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
