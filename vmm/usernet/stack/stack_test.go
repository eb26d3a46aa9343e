package stack

import (
	"net/netip"
	"testing"
)

func TestDenialsOncePerSecond(t *testing.T) {
	var d denials
	dst := netip.MustParseAddrPort("10.1.2.3:53")
	if !d.fresh(dst) || d.fresh(dst) || !d.fresh(netip.MustParseAddrPort("10.1.2.3:54")) {
		t.Error("a refusal is logged once a second per destination")
	}
	for i := range 2 * maxDenials {
		d.fresh(netip.AddrPortFrom(netip.MustParseAddr("10.9.9.9"), uint16(i)))
	}
	if len(d.seen) > maxDenials {
		t.Errorf("%d destinations remembered", len(d.seen))
	}
}
