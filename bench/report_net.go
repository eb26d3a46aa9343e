package main

import (
	"strings"
	"time"
)

// summary adds section 8 to the summary table.
func (netSection) summary(b *report, r *results) {
	n := r.net
	if n == nil {
		return
	}
	for _, d := range []struct {
		name    string
		raw, ma []time.Duration
	}{
		{"host → guest", n.rawUp, n.maUp},
		{"guest → host", n.rawDown, n.maDown},
	} {
		raw, ma := summarize(d.raw), summarize(d.ma)
		b.f("| 8. %s throughput through a published port vs raw QEMU + %s (bare init), %d MiB | %.0f MB/s | %.0f MB/s | %s | %s | — | — | — |\n",
			d.name, n.provider, n.bytes>>20, mbps(n.bytes, raw.median), mbps(n.bytes, ma.median),
			speed(ratio(raw.median, ma.median)), speed(ratio(raw.min, ma.min)))
	}
}

// report writes section 8.
func (netSection) report(b *report, r *results) {
	n := r.net
	if n == nil {
		return
	}
	b.f("## 8. Network throughput\n\n")
	b.f("One TCP transfer of %d MiB per sample, each on a new connection, timed on the host from dial to the\n", n.bytes>>20)
	b.f("end: host → guest (upload) ends when the guest's server acknowledges the last byte, guest → host\n")
	b.f("(download) at the last byte read. The same Go code (`bench/netpeer`, 256 KiB reads and writes) serves\n")
	b.f("and drives every path:\n\n")
	b.f("- **loopback**: server and client on the host's 127.0.0.1, no VM: the ceiling of any path;\n")
	b.f("- **raw QEMU**: the floor VM booted by the backend with the network microagent gives a workspace\n")
	b.f("  (`%s`), its bare `/init` (`bench/guestinit`, mode `net`) setting eth0 up with\n", strings.Join(n.netArgs, " "))
	b.f("  three ioctls and serving the transfers itself: QEMU and %s with nothing of microagent in the guest;\n", n.provider)
	b.f("- **microagent**: a VM booted as `runner.Run` boots it (agent, static network from the hello,\n")
	b.f("  same RAM and CPUs as the floor), the server a static binary from an image layer started by exec.\n\n")
	b.f("Paths are interleaved round by round (n=%d, after one uncounted round). Both VMs are up for the whole\n", summarize(n.maUp).n)
	b.f("section (one idle while the other transfers).\n\n")
	b.f("| Path | Direction | n | min | median | p99 | MB/s (median) |\n|---|---|--:|--:|--:|--:|--:|\n")
	for _, p := range []struct {
		name     string
		up, down []time.Duration
	}{
		{"loopback (host only)", n.loopUp, n.loopDown},
		{"raw QEMU + " + n.provider + ", bare init", n.rawUp, n.rawDown},
		{"**microagent, published port**", n.maUp, n.maDown},
	} {
		for _, d := range []struct {
			dir string
			s   stat
		}{{"host → guest", summarize(p.up)}, {"guest → host", summarize(p.down)}} {
			b.f("| %s | %s | %d | %s | %s | %s | %.0f |\n", p.name, d.dir, d.s.n, dur(d.s.min), dur(d.s.median), dur(d.s.p99), mbps(n.bytes, d.s.median))
		}
	}
	up, down := summarize(n.maUp), summarize(n.maDown)
	b.f("\nmicroagent / raw QEMU (ratio of median times): host → guest %s, guest → host %s; against the\n",
		x(ratio(up.median, summarize(n.rawUp).median)), x(ratio(down.median, summarize(n.rawDown).median)))
	b.f("loopback ceiling %s and %s. A published port is %s's forward in both VMs: microagent adds nothing\n",
		x(ratio(up.median, summarize(n.loopUp).median)), x(ratio(down.median, summarize(n.loopDown).median)), n.provider)
	b.f("to the data path, so a ratio away from 1x is the guest side (agent-spawned process vs init) or noise.\n\n")
}
