package main

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// report builds the markdown page.
type report struct{ strings.Builder }

func (b *report) f(format string, a ...any) { fmt.Fprintf(b, format, a...) }

func (b *report) sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }

// pct is a as a percentage of b.
func pct(a, b time.Duration) string {
	if b <= 0 || a < 0 {
		return "n/a"
	}
	if p := 100 * float64(a) / float64(b); p < 1 {
		return fmt.Sprintf("%.2f%%", p)
	}
	return fmt.Sprintf("%.0f%%", 100*float64(a)/float64(b))
}

// statHeader and statRow make the min/median/p99 tables.
func (b *report) statHeader(first string) {
	b.f("| %s | n | min | median | p99 |\n|---|--:|--:|--:|--:|\n", first)
}

func (b *report) statRow(name string, s stat) {
	b.f("| %s | %d | %s | %s | %s |\n", name, s.n, dur(s.min), dur(s.median), dur(s.p99))
}

func verdict(r, goal float64) string {
	switch {
	case math.IsNaN(r):
		return "n/a"
	case r <= goal:
		return "**yes**"
	default:
		return "**no**"
	}
}

func x(r float64) string {
	if math.IsNaN(r) {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", r)
}

func render(r *results) string {
	var b report
	o := r.opts
	h := r.host

	b.f("# microagent performance\n\n")
	b.f("Produced by `make bench` (`go run ./bench -out docs/performance.md`) on %s, in %s.\n",
		r.startedAt.UTC().Format("2006-01-02 15:04 MST"), r.wall.Round(time.Second))
	b.f("**Every number on this page was measured in that one run**; each ratio divides two medians\n")
	b.f("measured in it, the floor beside its target (boots interleaved round by round). Re-run `make bench`\n")
	b.f("to refresh; expect ±10-20%% between runs on a busy 2-core host. p99 is nearest-rank: with n=5 it is\n")
	b.f("the maximum.\n\n")

	b.f("## Host\n\n| | |\n|---|---|\n")
	b.f("| CPU | %s, %s cores, TSC %s, %s RAM |\n", h.cpu, h.cores, h.tsc, h.memory)
	b.f("| Accelerator | **%s**: %s |\n", h.accel, h.accelReason)
	b.f("| QEMU | %s (`-M microvm`, 1 vCPU, 256 MiB, as the backend starts it) |\n", h.qemu)
	b.f("| Host kernel | %s |\n", h.hostKernel)
	b.f("| Guest kernel | %s |\n", h.guestKernel)
	b.f("| Go, commit | %s, %s |\n", h.goVersion, h.commit)
	b.f("| Load average (1/5/15 min) | %s at start, %s at end; 1-min average %s during the run (other work, e.g. the test suite, may share the host) |\n",
		r.loadStart, r.loadEnd, r.loadRange())
	b.f("| Repetitions | n=%d (+1 untimed warm-up round of boots), %d raw echoes per echo boot, %d execs and %d hellos on one VM, %d exec rounds on a workspace |\n",
		o.n, o.rttN, o.execN, o.execN, o.wsExecN)
	b.f("| Sections | %s |\n\n", r.sectionList())

	b.f("## Summary\n\n")
	b.f("| Measurement | Floor (median) | microagent (median) | Ratio of medians | Ratio of minima | CPU-time ratio | Goal | Met (medians) |\n|---|--:|--:|--:|--:|--:|---|---|\n")
	for _, name := range allSections {
		if o.has(name) {
			sectionNamed(name).summary(&b, r)
		}
	}
	b.f("\n")
	b.f("Goals are judged on wall-time medians, as specified. Other work on the host only ever adds time, so\n")
	b.f("on a busy host the ratio of minima and the CPU-time ratio (CPU used by QEMU and the harness, which\n")
	b.f("other tenants barely change) are the steadier comparisons. The 1-minute load average ranged %s\n", r.loadRange())
	b.f("during the run.\n\n")

	for _, name := range allSections {
		if o.has(name) {
			sectionNamed(name).report(&b, r)
		}
	}
	return b.String()
}

// report writes sections 1-3.
func (runSection) report(b *report, r *results) {
	f := runFiguresOf(r)
	rawExit, echo, coldTotal, warm, execS := f.rawExit, f.echo, f.coldTotal, f.warm, f.execS
	rawCPU, coldCPU, perEcho, perExec := f.rawCPU, f.coldCPU, f.perEcho, f.perExec
	bootRatio, execRatio50, execRatio99 := f.bootRatio, f.execRatio50, f.execRatio99
	rawMarker := summarize(collect(r.raw, func(x *rawBoot) time.Duration { return x.marker }))
	rawQMP := summarize(collect(r.raw, func(x *rawBoot) time.Duration { return x.qmp }))
	rawGuest := summarize(collect(r.raw, func(x *rawBoot) time.Duration { return x.guest }))
	rawPre := summarize(collect(r.raw, func(x *rawBoot) time.Duration { return x.marker - x.guest }))
	echoReady := summarize(collect(r.echo, func(x *echoBoot) time.Duration { return x.ready }))
	echoMods := summarize(collect(r.echo, func(x *echoBoot) time.Duration { return x.modules - x.guest }))
	echoPort := summarize(collect(r.echo, func(x *echoBoot) time.Duration { return x.port - x.modules }))
	coldPrep := summarize(collect(r.cold, func(x *coldRun) time.Duration { return x.prepare }))
	coldVMM := summarize(collect(r.cold, func(x *coldRun) time.Duration { return x.vmmStart }))
	coldBoot := summarize(collect(r.cold, func(x *coldRun) time.Duration { return x.boot }))
	coldExec := summarize(collect(r.cold, func(x *coldRun) time.Duration { return x.exec }))
	coldDown := summarize(collect(r.cold, func(x *coldRun) time.Duration { return x.teardown }))
	first := summarize(r.prepFirst)
	ch := r.channel
	helloS := summarize(ch.hello)
	perHello := perOp(ch.helloCPU, len(ch.hello))

	b.f("## 1. Cold run vs raw boot\n\n")
	b.f("Floor: the installed kernel booted by the same backend (`qemu.Backend.StartWith`, same machine flags)\n")
	b.f("with an initramfs of the same layout whose `/init` is a tiny static Go program (`bench/guestinit`)\n")
	b.f("that prints a marker and powers off. Target: `runner.Run` of `true` in the busybox image, image and\n")
	b.f("root disk already cached (\"cold\" = a new VM), from call to return. A second floor boots the same\n")
	b.f("init in echo mode: it loads the virtio modules and opens the virtio-serial port, the least a guest\n")
	b.f("must do before it can answer the host.\n\n")
	b.statHeader("Boot (wall time from the call)")
	b.statRow("floor: QEMU start → trivial `/init` marker on the serial console", rawMarker)
	b.statRow("**floor: QEMU start → QEMU exit after the guest's power-off**", rawExit)
	b.statRow("floor 2: QEMU start → first raw echo on the virtio-serial port", echoReady)
	b.statRow("**`runner.Run(busybox, true)`: call → return**", coldTotal)
	b.statRow("floor: CPU time of QEMU + harness, start → exit", rawCPU)
	b.statRow("`runner.Run`: CPU time of QEMU + harness, call → return", coldCPU)
	b.f("\nCold run / raw boot: **%s** ratio of medians (goal ≤ 1.3x: %s), %s ratio of minima. Against floor 2\n",
		x(bootRatio), verdict(bootRatio, 1.3), x(ratio(coldTotal.min, rawExit.min)))
	b.f("(boot to a usable channel, no teardown): %s of medians, %s of minima. CPU time: %s.\n\n",
		x(ratio(coldTotal.median, echoReady.median)), x(ratio(coldTotal.min, echoReady.min)),
		x(ratio(coldCPU.median, rawCPU.median)))

	b.f("Where the cold run's time goes (from the outside: a wrapping `vmm.Backend` timestamps `Start` and\n")
	b.f("`Shutdown`; `Result.Boot` gives agent-ready):\n\n")
	b.statHeader("Phase of `runner.Run`")
	b.statRow("prepare (kernel verify, image lookup, root disk, initramfs, writable disk)", coldPrep)
	b.statRow("boot: VMM start → agent answered Hello (`Result.Boot`)", coldBoot)
	b.statRow("  of which QEMU exec → QMP ready", coldVMM)
	b.statRow("exec `true` and channel close", coldExec)
	b.statRow("teardown: QMP quit → QEMU gone, run folder removed", coldDown)

	b.f("\nThe first exec in a new VM (median %s above, n=%d) costs far more than a steady-state exec on a\n", dur(coldExec.median), coldExec.n)
	b.f("warm VM (median %s, section 3), most likely because the guest's page cache is still cold (busybox is\n", dur(execS.median))
	b.f("read from the virtio disk through the overlay on first use; not verified separately).\n")
	b.f("\nWhere boot time goes, from the guest's clocks (CLOCK_BOOTTIME printed by the trivial init; the\n")
	b.f("agent's uptime and `/proc/uptime` read over the channel right after boot, one VM):\n\n")
	b.statHeader("Boot stage")
	b.statRow("floor: QEMU exec → QMP ready", rawQMP)
	b.statRow("floor: QEMU start → guest clock starts (QEMU setup, kernel load, early kernel setup)", rawPre)
	b.statRow("floor: guest clock start → `/init` (kernel init, initramfs unpack)", rawGuest)
	b.statRow("floor 2: `/init` → modules loaded (finit_module of the virtio modules)", echoMods)
	b.statRow("floor 2: modules loaded → port found and open", echoPort)
	if ch.kernelUp > 0 {
		b.f("| agent VM: QEMU start → agent ready (`microvm.Boot`) | 1 | %s | | |\n", dur(ch.ready))
		b.f("| agent VM: guest clock start → agent's `/init` (approx.) | 1 | %s | | |\n", dur(ch.kernelUp-ch.agentUp))
		b.f("| agent VM: agent `/init` → ready (modules, mounts, overlay, port, Hello; approx.) | 1 | %s | | |\n", dur(ch.agentUp))
	}
	b.f("\nFloor QEMU command line (temporary paths shortened to `$TMP`):\n\n```\n%s\n```\n\n",
		strings.ReplaceAll(shellJoin(r.floorArgs), r.tmp, "$TMP"))

	b.f("## 2. Prepare: a second run does not rebuild the root disk\n\n")
	b.f("`runner.Prepare` of the busybox image. Warm: image, root disk, kernel stamps and initramfs cached.\n")
	b.f("First: a fresh state directory holding only the installed kernel (pull from an in-process registry\n")
	b.f("on 127.0.0.1, root disk build, initramfs build).\n\n")
	b.statHeader("Prepare")
	b.statRow("**warm store**", warm)
	b.statRow("first use (pull + root disk + initramfs)", first)
	b.f("\nWarm goal ≤ 100 ms: %s. Step by step (medians; the same steps called one by one):\n\n",
		verdict(float64(warm.median), float64(100*time.Millisecond)))
	b.f("| Step | warm | first use |\n|---|--:|--:|\n")
	step := func(name string, f func(*prepareSteps) time.Duration) {
		b.f("| %s | %s | %s |\n", name, dur(summarize(collect(r.stepsWarm, f)).median), dur(summarize(collect(r.stepsFirst, f)).median))
	}
	step("kernel: find + verify (stat stamps)", func(s *prepareSteps) time.Duration { return s.kernel })
	step("image: store lookup (first: pull)", func(s *prepareSteps) time.Duration { return s.image })
	step("root disk: cache hit (first: flatten + tar2ext4)", func(s *prepareSteps) time.Duration { return s.rootfs })
	step("initramfs: cache hit (first: cpio of agent + modules)", func(s *prepareSteps) time.Duration { return s.initramfs })
	b.f("\nFirst use re-hashes the kernel (~55 MB): the fresh state directories share it by hard link, which\n")
	b.f("changes the files' ctime and so invalidates the verify stamps, as a newly installed kernel would be.\n")

	b.f("\n## 3. Exec round trip vs raw virtio-serial echo\n\n")
	b.f("Target: `Client.Exec([\"true\"])` repeated on one VM booted by `microvm.Boot` (a yamux stream, JSON\n")
	b.f("header, process spawn and reap in the guest, exit frame). Floor: 64-byte writes echoed by floor 2's\n")
	b.f("init over a bare virtio-serial port, through the host socket (`vmm.Machine.DialAgent`), pooled over its\n")
	b.f("%d boots. `Hello` (a stream and one JSON request/reply, no process) separates protocol from spawn.\n\n", len(r.echo))
	b.f("| Round trip | n | min | median | p99 | mean CPU (QEMU + harness) |\n|---|--:|--:|--:|--:|--:|\n")
	rt := func(name string, s stat, cpu time.Duration) {
		b.f("| %s | %d | %s | %s | %s | %s |\n", name, s.n, dur(s.min), dur(s.median), dur(s.p99), dur(cpu))
	}
	rt("floor: raw 64 B echo", echo, perEcho)
	rt("`Client.Hello` (yamux + JSON, no process)", helloS, perHello)
	rt("**`Client.Exec([\"true\"])`**", execS, perExec)
	b.f("\nRatios: exec/echo p50 **%s**, p99 **%s** (goal ≤ 2x: %s / %s); hello/echo p50 %s; exec/hello p50 %s.\n",
		x(execRatio50), x(execRatio99), verdict(execRatio50, 2), verdict(execRatio99, 2),
		x(ratio(helloS.median, echo.median)), x(ratio(execS.median, helloS.median)))
	b.f("Mean CPU per round trip: exec/echo %s, hello/echo %s (from /proc/PID/stat, 10 ms ticks, summed over\n",
		x(ratio(perExec, perEcho)), x(ratio(perHello, perEcho)))
	b.f("all round trips).\n\n")
}

// report writes section 4.
func (rootfsSection) report(b *report, r *results) {
	o := r.opts
	build := summarize(collect(r.rootfs, func(x *rootfsRound) time.Duration { return x.build }))
	conv := summarize(collect(r.rootfs, func(x *rootfsRound) time.Duration { return x.tar2ext4 }))
	untar := summarize(collect(r.rootfs, func(x *rootfsRound) time.Duration { return x.untar }))
	mkfs := summarize(collect(r.rootfs, func(x *rootfsRound) time.Duration { return x.mkfs }))
	classic := summarize(collect(r.rootfs, func(x *rootfsRound) time.Duration { return x.untar + x.mkfs }))
	buildMBs := mbps(r.tarSize, build.median)
	classicMBs := mbps(r.tarSize, classic.median)

	b.f("## 4. Root disk build throughput\n\n")
	b.f("One uncompressed layer: the first %d MB of regular files under `%s` (files over %d MiB skipped)\n", o.rootfsMB, o.rootfsSrc, maxTarFile>>20)
	b.f("with its folders and symlinks: %d files, tar %.0f MB, in the page cache. MB/s = tar bytes / median time.\n", r.tarFiles, float64(r.tarSize)/1e6)
	b.f("`rootfs.Build` is what a first run does (flatten with `mutate.Extract`, hard-link reordering,\n")
	b.f("tar2ext4, fsync); `mkfs.ext4 -d` fsyncs its image too, `tar -x` does not. Each step starts after a\n")
	b.f("`sync`, so no step pays for the previous one's writeback.\n\n")
	b.f("| Build | n | min | median | MB/s (median) |\n|---|--:|--:|--:|--:|\n")
	row := func(name string, s stat) {
		b.f("| %s | %d | %s | %s | %.0f |\n", name, s.n, dur(s.min), dur(s.median), mbps(r.tarSize, s.median))
	}
	row("**`rootfs.Build`** (flatten + tar2ext4 + fsync)", build)
	row("tar2ext4 alone (tar file → ext4 file + fsync)", conv)
	row("`tar -x`", untar)
	row("`mkfs.ext4 -d`", mkfs)
	row("**`tar -x` + `mkfs.ext4 -d`**", classic)
	b.f("\n`rootfs.Build` is **%s** than `tar -x` + `mkfs.ext4 -d` (medians); tar2ext4 alone is %s.\n",
		speed(buildMBs/classicMBs), speed(ratio(classic.median, conv.median)))
}

// shellJoin quotes the arguments that need it, for display.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// speed words a throughput ratio (target / floor).
func speed(r float64) string {
	switch {
	case math.IsNaN(r):
		return "n/a"
	case r >= 1:
		return fmt.Sprintf("%.1fx faster", r)
	default:
		return fmt.Sprintf("%.1fx slower", 1/r)
	}
}

// perOp divides a CPU total over n operations (-1: unknown).
func perOp(total time.Duration, n int) time.Duration {
	if total < 0 || n == 0 {
		return -1
	}
	return total / time.Duration(n)
}
