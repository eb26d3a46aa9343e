package main

import (
	"fmt"
	"strings"
	"time"
)

// memGoal is the goal for host memory per idle workspace beyond guest RAM.
const memGoal = 32 << 20

// sectionList names the sections that ran.
func (r *results) sectionList() string {
	var out []string
	for _, s := range allSections {
		if r.opts.has(s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, ", ")
}

func mib(n int64) string {
	if n < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// summary adds section 5 to the summary table.
func (workspaceSection) summary(b *report, r *results) {
	if w := r.ws; w != nil {
		raw := summarize(collect(w.raw, func(x *rawBoot) time.Duration { return x.exit }))
		st := summarize(w.start)
		cli, lib, rawE := summarize(w.cli), summarize(w.lib), summarize(w.raw2)
		b.f("| 5. `workspace.Start` of a halted workspace vs raw QEMU boot to a trivial init | %s | %s | %s | %s | — | — | — |\n",
			dur(raw.median), dur(st.median), x(ratio(st.median, raw.median)), x(ratio(st.min, raw.min)))
		b.f("| 5. `exec NAME true`: CLI process vs `workspace.Exec` | %s | %s | %s | %s | — | — | — |\n",
			dur(lib.median), dur(cli.median), x(ratio(cli.median, lib.median)), x(ratio(cli.min, lib.min)))
		b.f("| 5. `exec NAME true`: `workspace.Exec` vs raw `Client.Exec` | %s | %s | %s | %s | — | — | — |\n",
			dur(rawE.median), dur(lib.median), x(ratio(lib.median, rawE.median)), x(ratio(lib.min, rawE.min)))
		mc := summarize(w.mcp)
		b.f("| 5. `workspace_exec` of `true` through `serve mcp` (stdio, official Go SDK client) vs `workspace.Exec`, p50 | %s | %s | %s | %s | — | ≤ 1.2x | %s |\n",
			dur(lib.median), dur(mc.median), x(ratio(mc.median, lib.median)), x(ratio(mc.min, lib.min)), verdict(ratio(mc.median, lib.median), 1.2))
		if m := w.mem; m != nil && !m.ramMappingNotFound {
			b.f("| 5. host memory per idle workspace beyond guest RAM (RSS of supervisor + QEMU + network helper − guest RAM resident) | — | %s | — | — | — | ≤ 32 MiB | %s |\n",
				mib(m.beyond()), verdict(float64(m.beyond()), memGoal))
		}
	}
}

// report writes section 5.
func (workspaceSection) report(b *report, r *results) {
	w := r.ws
	if w == nil {
		return
	}
	raw := summarize(collect(w.raw, func(x *rawBoot) time.Duration { return x.exit }))
	rawCPU := summarize(collect(w.raw, func(x *rawBoot) time.Duration { return x.cpu }))
	st := summarize(w.start)
	boot := summarize(w.startBoot)
	pre := summarize(collect(pairs(w.start, w.startBoot), func(p [2]time.Duration) time.Duration { return p[0] - p[1] }))
	halt := summarize(w.halt)
	cli, lib, rawE := summarize(w.cli), summarize(w.lib), summarize(w.raw2)

	b.f("\n## 5. Named workspaces\n\n")
	b.f("One workspace of the busybox image, profile %s (%d MiB, as the floor VM), created, started and\n", w.profile, w.memoryMiB)
	b.f("halted once (untimed: the first start after create), then started and halted %d times. Each\n", len(w.start))
	b.f("`workspace.Start` is timed from the call to its return, which comes once the guest agent has\n")
	b.f("answered (the supervisor, a freshly built `microagent` binary re-executed in its own session, owns\n")
	b.f("QEMU). Each round first boots the floor of section 1 (QEMU start → exit of a trivial `/init`), so\n")
	b.f("floor and target share the host's load.\n\n")
	b.statHeader("Start (wall time from the call)")
	b.statRow("floor: QEMU start → QEMU exit after the trivial init's power-off", raw)
	b.statRow("floor: CPU time of QEMU + harness", rawCPU)
	b.statRow("**`workspace.Start` of a halted workspace: call → return (exec-ready)**", st)
	b.statRow("  of which VMM start → agent answered (`Info.BootSeconds`, the supervisor's clock)", boot)
	b.statRow("  of which the rest: lock, Prepare, plan, supervisor exec, readiness pipe", pre)
	b.statRow("`workspace.Halt` (graceful power-off; not a goal)", halt)
	b.f("\nStart / raw boot: **%s** ratio of medians, %s ratio of minima.\n\n",
		x(ratio(st.median, raw.median)), x(ratio(st.min, raw.min)))

	b.f("`exec NAME true`, %d rounds on the running workspace, each round timing the three paths one after\n", w.execRounds)
	b.f("another (after 5 untimed rounds): the real CLI (`microagent --state-dir X exec NAME -- true`, from\n")
	b.f("the process's start to its exit: Go runtime start, cobra, the supervisor socket, the guest),\n")
	b.f("the library (`workspace.Exec`, in the harness: supervisor socket → supervisor → channel → guest),\n")
	b.f("and the raw channel (`Client.Exec([\"true\"])` on a second VM booted with `microvm.Boot`, as in\n")
	b.f("section 3, running at the same time).\n\n")
	b.statHeader("`exec true` round trip")
	b.statRow("raw channel: `Client.Exec` on a `microvm.Boot` VM", rawE)
	b.statRow("**library: `workspace.Exec`**", lib)
	b.statRow("**CLI: `microagent exec NAME -- true` process**", cli)
	b.statRow("**MCP: `workspace_exec` `[\"true\"]` through `microagent serve mcp` over stdio**", summarize(w.mcp))
	b.f("\nRatios of medians: CLI / library **%s**, library / raw **%s**, CLI / raw %s (minima: %s, %s, %s).\n",
		x(ratio(cli.median, lib.median)), x(ratio(lib.median, rawE.median)), x(ratio(cli.median, rawE.median)),
		x(ratio(cli.min, lib.min)), x(ratio(lib.min, rawE.min)), x(ratio(cli.min, rawE.min)))
	b.f("p99: CLI / library %s, library / raw %s.\n", x(ratio(cli.p99, lib.p99)), x(ratio(lib.p99, rawE.p99)))
	mc := summarize(w.mcp)
	b.f("The MCP path is a fourth in each round: one session of the official Go SDK's client with\n")
	b.f("`microagent serve mcp` over stdio, kept for all rounds (its policy lets it touch this workspace),\n")
	b.f("each call a `tools/call` of `workspace_exec` whose server runs `workspace.Exec` with captured, bounded\n")
	b.f("output. MCP / library: **%s** ratio of medians (goal ≤ 1.2x), %s of minima, %s at p99.\n\n",
		x(ratio(mc.median, lib.median)), x(ratio(mc.min, lib.min)), x(ratio(mc.p99, lib.p99)))

	if m := w.mem; m != nil {
		b.f("Host memory of the same workspace, idle (after the exec rounds), %d MiB of guest RAM:\n\n", w.memoryMiB)
		b.f("| Process | VmRSS | Pss (smaps_rollup) |\n|---|--:|--:|\n")
		b.f("| supervisor (`microagent __supervise`) | %s | %s |\n", mib(m.supRSS), mib(m.supPss))
		b.f("| QEMU | %s | %s |\n", mib(m.qemuRSS), mib(m.qemuPss))
		b.f("| network helper (`microagent-net`; 0 without a NIC) | %s | — |\n", mib(m.netRSS))
		sumPss := int64(-1)
		if m.supPss >= 0 && m.qemuPss >= 0 {
			sumPss = m.supPss + m.qemuPss
		}
		b.f("| **all** | %s | %s (without the network helper) |\n\n", mib(m.supRSS+m.qemuRSS+m.netRSS), mib(sumPss))
		if m.ramMappingNotFound {
			b.f("QEMU's guest RAM mapping was not found in its smaps; the figure below uses the guest's view only.\n\n")
		} else {
			b.f("Guest RAM resident on the host: the Rss of QEMU's mapping of the workspace's RAM memfd (%s,\n", mib(m.ramMapping))
			b.f("the guest's %d MiB, in `/proc/QEMU/smaps`): **%s**. The guest's own\n", w.memoryMiB, mib(m.ramRSS))
			b.f("view, `MemTotal − MemFree` from its `/proc/meminfo` (through exec), is %s of %s (lower: pages\n", mib(m.guestUsed), mib(m.guestTotal))
			b.f("the guest touched and freed stay resident on the host, and the kernel's own reserved memory is\n")
			b.f("outside MemTotal).\n\n")
			b.f("| Beyond guest RAM | |\n|---|--:|\n")
			b.f("| **VmRSS(supervisor) + VmRSS(QEMU) + VmRSS(network helper) − Rss(guest RAM mapping)** | **%s** |\n", mib(m.beyond()))
			if sumPss >= 0 {
				b.f("| Pss(supervisor) + Pss(QEMU) + VmRSS(network helper) − Rss(guest RAM mapping) (shared libraries split among sharers) | %s |\n", mib(sumPss+m.netRSS-m.ramRSS))
			}
			b.f("| VmRSS(supervisor) + VmRSS(QEMU) + VmRSS(network helper) − guest (MemTotal − MemFree) | %s |\n", mib(m.supRSS+m.qemuRSS+m.netRSS-m.guestUsed))
			if m.tcgRSS >= 0 {
				b.f("| first row − Rss of TCG's translated-code buffer (the %s anonymous mapping; none under KVM) | %s |\n",
					mib(m.tcgSize), mib(m.beyond()-m.tcgRSS))
			}
			b.f("\nGoal ≤ 32 MiB beyond guest RAM (first row): %s.\n", verdict(float64(m.beyond()), memGoal))
		}
		if len(m.top) > 0 {
			b.f("\nQEMU's largest mappings by Rss (`/proc/QEMU/smaps`; anonymous ones unnamed):\n\n")
			b.f("| Mapping | Size | Rss |\n|---|--:|--:|\n")
			for _, t := range m.top {
				n := t.name
				if n == "" {
					n = "(anonymous)"
				}
				switch {
				case t.name != "":
				case t.size == m.ramMapping && t.rss == m.ramRSS:
					n += " = guest RAM"
				case t.size == m.tcgSize && t.rss == m.tcgRSS:
					n += " = TCG translated-code buffer"
				}
				b.f("| %s | %s | %s |\n", strings.ReplaceAll(n, r.tmp, "$TMP"), mib(t.size), mib(t.rss))
			}
			b.f("\nA file-backed mapping (e.g. the kernel image QEMU maps for `-kernel`) is page cache shared by\n")
			b.f("every VM booting the same file: VmRSS counts it in full for each, Pss divides it among them.\n")
		}
	}
}

// pairs zips two equally long sample lists.
func pairs(a, b []time.Duration) [][2]time.Duration {
	out := make([][2]time.Duration, 0, min(len(a), len(b)))
	for i := range min(len(a), len(b)) {
		out = append(out, [2]time.Duration{a[i], b[i]})
	}
	return out
}
