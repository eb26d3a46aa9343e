package main

import (
	"fmt"
	"strings"
	"time"
)

// snapPair is the smallest and largest guest of section 10 (the fork
// scaling goal compares them); nil when fewer than two sizes ran.
func (r *snapResult) snapPair() (small, large *snapSize) {
	if r == nil || len(r.sizes) < 2 {
		return nil, nil
	}
	small, large = r.sizes[0], r.sizes[0]
	for _, s := range r.sizes {
		if s.memoryMiB < small.memoryMiB {
			small = s
		}
		if s.memoryMiB > large.memoryMiB {
			large = s
		}
	}
	return small, large
}

// guestSize names a guest memory size.
func guestSize(m int) string {
	if m >= 1024 && m%1024 == 0 {
		return fmt.Sprintf("%d GiB", m/1024)
	}
	return fmt.Sprintf("%d MiB", m)
}

// floorReady is, per round, the floor plus the bare path to the agent's
// first exec (reconnect, hello, exec true): exec-ready without microagent's
// supervisor, for telling microagent's share of a fork from the guest's.
func (s *snapSize) floorReady() []time.Duration {
	out := make([]time.Duration, 0, len(s.floor))
	for i := range s.floor {
		out = append(out, s.floor[i]+s.floorExec[i])
	}
	return out
}

// summary adds section 10 to the summary table.
func (snapshotSection) summary(b *report, r *results) {
	sr := r.snap
	if sr == nil {
		return
	}
	for _, s := range sr.sizes {
		fl, fk := summarize(s.floor), summarize(s.fork)
		fr := ratio(fk.median, fl.median)
		b.f("| 10. fork to exec-ready, %s guest, vs bare QEMU start + state load | %s | %s | %s | %s | — | ≤ 1.5x | %s |\n",
			guestSize(s.memoryMiB), dur(fl.median), dur(fk.median), x(fr), x(ratio(fk.min, fl.min)), verdict(fr, 1.5))
		fe := summarize(s.floorReady())
		b.f("| 10. fork to exec-ready, %s guest, vs the floor + bare reconnect, hello, resumed, `exec true` (no supervisor) | %s | %s | %s | %s | — | — | — |\n",
			guestSize(s.memoryMiB), dur(fe.median), dur(fk.median), x(ratio(fk.median, fe.median)), x(ratio(fk.min, fe.min)))
		rs := summarize(s.restore)
		b.f("| 10. restore to exec-ready, %s guest, vs the same floor | %s | %s | %s | %s | — | — | — |\n",
			guestSize(s.memoryMiB), dur(fl.median), dur(rs.median), x(ratio(rs.median, fl.median)), x(ratio(rs.min, fl.min)))
	}
	if small, large := sr.snapPair(); small != nil {
		a, z := summarize(small.fork), summarize(large.fork)
		g := ratio(z.median, a.median)
		b.f("| 10. fork to exec-ready, %s / %s guest | %s | %s | %s | %s | — | ≤ 1.2 | %s |\n",
			guestSize(large.memoryMiB), guestSize(small.memoryMiB), dur(a.median), dur(z.median), x(g), x(ratio(z.min, a.min)), verdict(g, 1.2))
	}
}

// report writes section 10.
func (snapshotSection) report(b *report, r *results) {
	sr := r.snap
	if sr == nil || len(sr.sizes) == 0 {
		return
	}
	n := len(sr.sizes[0].fork)
	b.f("## 10. Snapshots: pause/resume, snapshot, restore, fork\n\n")
	b.f("One workspace per guest size (`create --memory`, default profile otherwise, the busybox test image),\n")
	b.f("idle, no secrets, user-mode network as created. Every time is wall time of library calls\n")
	b.f("(`workspace.Pause`, `Resume`, `CreateSnapshot`, `Fork`, `Start`, `Exec`), call to return:\n\n")
	b.f("- **pause / resume**: the running workspace, %d of each after one uncounted pair;\n", len(sr.sizes[0].pause))
	b.f("- **snapshot create**: `CreateSnapshot` of the running workspace (pause, device state, RAM file and\n")
	b.f("  disk copies, leak scan, resume); %d timed after the kept `base` snapshot, each deleted after;\n", len(sr.sizes[0].create))
	b.f("- **fork to exec-ready**: `Fork` of `base` into a new workspace + `Start` (supervisor, QEMU with\n")
	b.f("  `-incoming defer`, the RAM file mapped privately, state load, agent reconnect, hello, resumed request with the fork's new name and machine id) + `exec true`;\n")
	b.f("  the fork is deleted after;\n")
	b.f("- **restore to exec-ready**: the source halted, then `Start --from-snapshot base` (disk rolled back,\n")
	b.f("  the RAM file copied into the workspace's own shared memory, QEMU, state load, hello) + `exec true`;\n")
	b.f("- **floor**: a bare QEMU started by the backend with the workspace's devices and `-incoming defer`,\n")
	b.f("  the same snapshot's RAM file mapped privately, `LoadState` of its device state, `Resume`:\n")
	b.f("  no supervisor, no agent, no disk copy (timed apart below). After the floor's clock stops the harness\n")
	b.f("  reconnects to the resumed agent, sends hello and the resumed request (clock, entropy) as the\n")
	b.f("  supervisor does, and runs `exec true`, to prove the machine runs (all timed apart).\n\n")
	b.f("Floor, fork and restore are interleaved round by round (n=%d, after one uncounted round), one VM\n", n)
	b.f("running at a time.\n\n")
	if len(sr.sizes[0].floorArgs) > 0 {
		b.f("Floor command line (%s guest): `%s`\n\n", guestSize(sr.sizes[0].memoryMiB),
			strings.ReplaceAll(shellJoin(sr.sizes[0].floorArgs), r.tmp, "$TMP"))
	}
	for _, s := range sr.sizes {
		b.f("### %s guest\n\n", guestSize(s.memoryMiB))
		b.statHeader("Measurement")
		b.statRow("pause (`workspace.Pause`)", summarize(s.pause))
		b.statRow("resume (`workspace.Resume`)", summarize(s.resume))
		b.statRow("snapshot create of the running workspace", summarize(s.create))
		b.statRow("**floor**: bare QEMU start + state load + resume", summarize(s.floor))
		b.statRow("  of which QEMU start to QMP", summarize(s.floorStart))
		b.statRow("  of which `LoadState`", summarize(s.floorLoad))
		b.statRow("  of which `Resume`", summarize(s.floorResume))
		b.statRow("floor QEMU's CPU time at resume", summarize(s.floorCPU))
		b.statRow("(not in the floor) copy of the snapshot's disk", summarize(s.floorDiskCopy))
		b.statRow("(not in the floor) then reconnect + hello + resumed + exec true", summarize(s.floorExec))
		b.statRow("  of which reconnect (`channel.Reconnect`)", summarize(s.floorReconnect))
		b.statRow("  of which hello", summarize(s.floorHello))
		b.statRow("  of which resumed request (clock, entropy)", summarize(s.floorResumed))
		b.statRow("  QEMU's CPU time over reconnect + hello + resumed + exec true", summarize(s.floorExecCPU))
		b.statRow("(not in the floor) a second `exec true` right after", summarize(s.floorExec2))
		b.statRow("floor + reconnect + hello + resumed + exec true (exec-ready, no supervisor)", summarize(s.floorReady()))
		b.statRow("**fork to exec-ready**", summarize(s.fork))
		b.statRow("  of which `Fork`", summarize(s.forkCall))
		b.statRow("  of which `Start`", summarize(s.forkStart))
		b.statRow("    of which QEMU start → agent answered", summarize(s.forkBoot))
		b.statRow("  of which `exec true`", summarize(s.forkExec))
		b.statRow("(not in the total) a second `exec true` right after", summarize(s.forkExec2))
		b.statRow("**restore to exec-ready**", summarize(s.restore))
		b.statRow("  of which `Start --from-snapshot`", summarize(s.restoreStart))
		b.statRow("    of which QEMU start → agent answered", summarize(s.restoreBoot))
		b.statRow("  of which `exec true`", summarize(s.restoreExec))
		b.statRow("(not in the total) a second `exec true` right after", summarize(s.restoreExec2))
		var sizes []time.Duration // byte counts carried in Durations, to reuse summarize
		for _, z := range s.createSize {
			sizes = append(sizes, time.Duration(z))
		}
		sz := summarize(sizes)
		b.f("\nSnapshot size on disk (allocated): median %s over the %d timed creates; the `base` snapshot %s\n",
			mib(int64(sz.median)), sz.n, mib(s.baseTotal))
		b.f("(device state %s, RAM file %s of %s, of which %s not zero; disk %s).\n",
			mib(s.baseState), mib(s.baseMemory), guestSize(s.memoryMiB), mib(s.baseMemoryNonZero), mib(s.baseDisk))
		fl, fk, rs, fe := summarize(s.floor), summarize(s.fork), summarize(s.restore), summarize(s.floorReady())
		b.f("fork / floor %s (minima %s), restore / floor %s (minima %s); against exec-ready without the\n",
			x(ratio(fk.median, fl.median)), x(ratio(fk.min, fl.min)), x(ratio(rs.median, fl.median)), x(ratio(rs.min, fl.min)))
		b.f("supervisor: fork %s (minima %s), restore %s (minima %s).\n\n",
			x(ratio(fk.median, fe.median)), x(ratio(fk.min, fe.min)), x(ratio(rs.median, fe.median)), x(ratio(rs.min, fe.min)))
	}
	b.f("### Goals\n\n| Goal | Measured (medians) | Minima | Met |\n|---|--:|--:|---|\n")
	if small, large := sr.snapPair(); small != nil {
		a, z := summarize(small.fork), summarize(large.fork)
		g := ratio(z.median, a.median)
		b.f("| fork(%s) / fork(%s) ≤ 1.2 | %s | %s | %s |\n", guestSize(large.memoryMiB), guestSize(small.memoryMiB),
			x(g), x(ratio(z.min, a.min)), metWord(g, 1.2))
	}
	for _, s := range sr.sizes {
		fl, fk := summarize(s.floor), summarize(s.fork)
		fr := ratio(fk.median, fl.median)
		b.f("| fork to exec-ready ≤ 1.5x the floor, %s | %s | %s | %s |\n", guestSize(s.memoryMiB), x(fr), x(ratio(fk.min, fl.min)), metWord(fr, 1.5))
	}
	b.f("\n")
}

// metWord is "met" or "not met" for a ratio against its goal.
func metWord(r, goal float64) string {
	switch v := verdict(r, goal); v {
	case "**yes**":
		return "**met**"
	case "**no**":
		return "**not met**"
	default:
		return v
	}
}
