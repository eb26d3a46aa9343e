package main

import (
	"strings"
	"time"

	"github.com/microagent-dev/microagent/vmm/usernet"
)

// Goals of section 8 (issue #12): time ratios against the passt floor,
// and the idle helper's resident memory.
const (
	netThroughputGoal = 1.3
	netConnectGoal    = 1.5
	netHelperRSSGoal  = 16 << 20
)

// netPair is one comparison of section 8: the same transfers through the
// floor's network and through microagent's.
type netPair struct {
	what       string
	floor, ma  []time.Duration
	goal       float64
	throughput bool // samples are transfers of netResult.bytes
	floorName  string
}

func (n *netResult) pairs() []netPair {
	pub := "raw QEMU + " + n.provider + " (bare init)"
	out := "the microagent VM on " + n.provider
	return []netPair{
		{what: "host → guest throughput through a published port", floor: n.rawUp, ma: n.maUp, goal: netThroughputGoal, throughput: true, floorName: pub},
		{what: "guest → host throughput through a published port", floor: n.rawDown, ma: n.maDown, goal: netThroughputGoal, throughput: true, floorName: pub},
		{what: "guest → host throughput, guest-dialled (host access)", floor: n.passtOutUp, ma: n.maOutUp, goal: netThroughputGoal, throughput: true, floorName: out},
		{what: "host → guest throughput, guest-dialled (host access)", floor: n.passtOutDown, ma: n.maOutDown, goal: netThroughputGoal, throughput: true, floorName: out},
		{what: "connection setup through a published port, p50", floor: n.rawConn, ma: n.maConn, goal: netConnectGoal, floorName: pub},
		{what: "connection setup, guest-dialled (host access), p50", floor: n.passtOutConn, ma: n.maOutConn, goal: netConnectGoal, floorName: out},
	}
}

// summary adds section 8 to the summary table.
func (netSection) summary(b *report, r *results) {
	n := r.net
	if n == nil {
		return
	}
	for _, p := range n.pairs() {
		fl, ma := summarize(p.floor), summarize(p.ma)
		tr := ratio(ma.median, fl.median)
		if p.throughput {
			b.f("| 8. %s, %s vs %s, %d MiB | %.0f MB/s | %.0f MB/s | %s | %s | — | ≤ %.1fx time | %s |\n",
				p.what, usernet.BinaryName, p.floorName, n.bytes>>20, mbps(n.bytes, fl.median), mbps(n.bytes, ma.median),
				x(tr), x(ratio(ma.min, fl.min)), p.goal, verdict(tr, p.goal))
			continue
		}
		b.f("| 8. %s, %s vs %s | %s | %s | %s | %s | — | ≤ %.1fx | %s |\n",
			p.what, usernet.BinaryName, p.floorName, dur(fl.median), dur(ma.median), x(tr), x(ratio(ma.min, fl.min)), p.goal, verdict(tr, p.goal))
	}
	met := "**no**"
	if n.helperIdle > 0 && n.helperIdle <= netHelperRSSGoal {
		met = "**yes**"
	}
	b.f("| 8. idle network helper (%s) VmRSS per workspace | %s (passt) | %s | — | — | — | ≤ %s | %s |\n",
		usernet.BinaryName, mib(n.passtIdle), mib(n.helperIdle), mib(netHelperRSSGoal), met)
}

// report writes section 8.
func (netSection) report(b *report, r *results) {
	n := r.net
	if n == nil {
		return
	}
	b.f("## 8. Network\n\n")
	b.f("Every sample is a TCP connection of its own, timed from dial to the end. A transfer moves %d MiB:\n", n.bytes>>20)
	b.f("an upload ends when the server acknowledges the last byte, a download at the last byte read; a\n")
	b.f("connection setup is a one-byte download (dial, request, first byte, close). The same Go code\n")
	b.f("(`bench/netpeer`, 256 KiB reads and writes) serves and drives every path:\n\n")
	b.f("- **loopback**: server and client on the host's 127.0.0.1, no VM: the ceiling of any path;\n")
	b.f("- **raw QEMU + %s**: the floor VM, booted by the backend with passt's socket pair\n", n.provider)
	b.f("  (`%s`), its bare `/init` (`bench/guestinit`, mode `net`) setting eth0 up with\n", strings.Join(n.netArgs, " "))
	b.f("  three ioctls and serving the transfers itself: QEMU and %s with nothing of microagent in the guest;\n", n.provider)
	b.f("- **microagent on %s**: a VM booted as `runner.Run` boots it (agent, static network from the hello,\n", usernet.BinaryName)
	b.f("  same RAM and CPUs as the floor) on microagent's own network, whose every flow passes the egress\n")
	b.f("  policy, the server a static binary from an image layer started by exec behind a published port;\n")
	b.f("- **guest-dialled**: the guest's own client (`bench/netserver client`, started by exec, timing itself)\n")
	b.f("  dials the loopback server at the gateway %s (host access to that one port), once from the\n", "10.0.2.2")
	b.f("  microagent VM on %s and once from the same image booted the same way on %s (the floor).\n\n", usernet.BinaryName, n.provider)
	b.f("Paths are interleaved round by round (n=%d transfers and %d connection setups each, after one\n", summarize(n.maUp).n, summarize(n.maConn).n)
	b.f("uncounted round). All VMs are up for the whole section (idle while another transfers).\n\n")
	b.f("| Path | Direction | n | min | median | p99 | MB/s (median) |\n|---|---|--:|--:|--:|--:|--:|\n")
	for _, p := range []struct {
		name     string
		up, down []time.Duration
	}{
		{"loopback (host only)", n.loopUp, n.loopDown},
		{"raw QEMU + " + n.provider + ", bare init, published port", n.rawUp, n.rawDown},
		{"**microagent on " + usernet.BinaryName + ", published port**", n.maUp, n.maDown},
		{"microagent VM on " + n.provider + ", guest-dialled", n.passtOutDown, n.passtOutUp},
		{"**microagent on " + usernet.BinaryName + ", guest-dialled**", n.maOutDown, n.maOutUp},
	} {
		for _, d := range []struct {
			dir string
			s   stat
		}{{"host → guest", summarize(p.up)}, {"guest → host", summarize(p.down)}} {
			b.f("| %s | %s | %d | %s | %s | %s | %.0f |\n", p.name, d.dir, d.s.n, dur(d.s.min), dur(d.s.median), dur(d.s.p99), mbps(n.bytes, d.s.median))
		}
	}
	b.f("\n")
	b.statHeader("Connection setup")
	b.statRow("loopback (host only)", summarize(n.loopConn))
	b.statRow("raw QEMU + "+n.provider+", published port", summarize(n.rawConn))
	b.statRow("**microagent on "+usernet.BinaryName+", published port**", summarize(n.maConn))
	b.statRow("microagent VM on "+n.provider+", guest-dialled", summarize(n.passtOutConn))
	b.statRow("**microagent on "+usernet.BinaryName+", guest-dialled**", summarize(n.maOutConn))
	b.f("\nmicroagent / floor (ratio of median times):")
	for i, p := range n.pairs() {
		sep := ";"
		if i == 0 {
			sep = ""
		}
		b.f("%s %s %s", sep, p.what, x(ratio(summarize(p.ma).median, summarize(p.floor).median)))
	}
	b.f(". Every microagent byte crosses gVisor's netstack in the helper and a host socket it opened\n")
	b.f("after the policy allowed the flow; passt splices the guest's frames onto host sockets with less\n")
	b.f("in between. Guest-dialled times are measured in the guest (its clock) and host-dialled ones on the host.\n\n")
	b.f("Network helper memory: VmRSS of %s of the microagent VM right after boot (idle) %s (anonymous %s; the\n", usernet.BinaryName, mib(n.helperIdle), mib(n.helperIdleAnon))
	b.f("rest is the binary's pages, which every helper on the host shares), after every\n")
	b.f("transfer above and a second's rest %s; passt of the floor VM right after boot %s.\n\n", mib(n.helperAfter), mib(n.passtIdle))
}
