package main

import "time"

// secretsEcho is the echo floor section 7 compares against: section 3's
// boots when they ran, else the section's own, and where it came from.
func (r *results) secretsEcho() (stat, string) {
	boots, from := r.echo, "section 3's echo floor"
	if len(boots) == 0 && r.secrets != nil {
		boots, from = r.secrets.ownEcho, "an echo floor VM booted by this section (after one uncounted warm-up boot)"
	}
	var rtts []time.Duration
	for _, e := range boots {
		rtts = append(rtts, e.rtts...)
	}
	return summarize(rtts), from
}

// summary adds section 7 to the summary table.
func (secretsSection) summary(b *report, r *results) {
	s := r.secrets
	if s == nil {
		return
	}
	echo, _ := r.secretsEcho()
	f := summarize(s.fetch)
	s0, sn := summarize(s.start0), summarize(s.startN)
	r50, r99 := ratio(f.median, echo.median), ratio(f.p99, echo.p99)
	b.f("| 7. on-demand secret fetch from inside the guest vs raw 64 B echo, p50 | %s | %s | %s | %s | — | ≤ 2x | %s |\n",
		dur(echo.median), dur(f.median), x(r50), x(ratio(f.min, echo.min)), verdict(r50, 2))
	b.f("| 7. same, p99 | %s | %s | %s | — | — | ≤ 2x | %s |\n", dur(echo.p99), dur(f.p99), x(r99), verdict(r99, 2))
	b.f("| 7. start to ready: %d materialized 64 B secrets vs none | %s | %s | %s | %s | — | — | — |\n",
		s.count, dur(s0.median), dur(sn.median), x(ratio(sn.median, s0.median)), x(ratio(sn.min, s0.min)))
}

// report writes section 7.
func (secretsSection) report(b *report, r *results) {
	s := r.secrets
	if s == nil {
		return
	}
	echo, from := r.secretsEcho()
	f, host := summarize(s.fetch), summarize(s.host)
	s0, sn, dn := summarize(s.start0), summarize(s.startN), summarize(s.deliverN)
	r50, r99 := ratio(f.median, echo.median), ratio(f.p99, echo.p99)

	b.f("## 7. Secrets\n\n")
	b.f("**On-demand fetch.** One VM booted as in section 3 (`microvm.Boot`, default profile) is given one\n")
	b.f("on-demand declaration as `runner.Run` gives it (`conduit.Resolve` of `X=env:BENCH_SECRET`, `Deliver`,\n")
	b.f("`SetFetchHandler(conduit.OnDemand(...))`, no audit log as in a one-shot run). One exec of a static Go\n")
	b.f("client (`bench/secretsclient`, a file in an extra image layer) then fetches `X` (64 bytes) %d times, each\n", f.n)
	b.f("over a new connection to `$MICROAGENT_SECRETS_SOCK` (`GET X`, one JSON reply line), after 10 uncounted\n")
	b.f("fetches; it times each with the guest's clock (connect → reply decoded). A fetch crosses the guest's\n")
	b.f("unix socket, the agent, a new yamux stream to the host, the `FetchFunc` (re-resolve + audit gate) and\n")
	b.f("back. Floor: the raw 64 B echo over a bare virtio-serial port, from %s, same run.\n\n", from)
	b.statHeader("Round trip")
	b.statRow("floor: raw 64 B echo (host clock)", echo)
	b.statRow("**on-demand fetch, measured inside the guest**", f)
	b.statRow("of which host `FetchFunc` alone (resolve `env:` + audit gate)", host)
	b.f("\nFetch/echo: p50 **%s**, p99 **%s** (goal ≤ 2x: %s / %s); ratio of minima %s. The host-side\n",
		x(r50), x(r99), verdict(r50, 2), verdict(r99, 2), x(ratio(f.min, echo.min)))
	b.f("resolution is %s of the fetch's median. The fetch is timed by the guest's clock (the emulated TSC\n",
		pct(host.median, f.median))
	b.f("under TCG), the echo by the host's; both count elapsed time, but the guest's may run slightly off.\n")
	if ch := r.channel; ch != nil && len(ch.hello) > 0 {
		b.f("For scale, section 3's `Client.Hello` (one yamux stream, one JSON request/reply) has median %s:\n", dur(summarize(ch.hello).median))
		b.f("fetch/hello %s.\n", x(ratio(f.median, summarize(ch.hello).median)))
	}
	b.f("\n")

	b.f("**Start to ready with materialized secrets.** Call → `conduit.Resolve` → `runner.Prepare` (warm) →\n")
	b.f("writable disk → `microvm.Boot` → `Deliver` returned (the guest has written every value to its tmpfs\n")
	b.f("`/run/secrets`): what `runner.Run` does before it starts the command. With no secrets versus %d\n", s.count)
	b.f("`--secret S_i=env:BENCH_S_i` declarations of 64 bytes each, interleaved round by round (n=%d, after\n", s0.n)
	b.f("one uncounted round); after timing, the %d-secret VM is checked to hold %d files in `/run/secrets`.\n\n", s.count, s.count)
	b.statHeader("Start to ready")
	b.statRow("no secrets", s0)
	b.statRow(b.sprintf("**%d materialized secrets**", s.count), sn)
	b.statRow(b.sprintf("of which `Deliver` of the %d", s.count), dn)
	b.f("\n%d secrets / none: **%s** ratio of medians, %s of minima; the median difference is %s.\n\n",
		s.count, x(ratio(sn.median, s0.median)), x(ratio(sn.min, s0.min)), dur(sn.median-s0.median))
}
